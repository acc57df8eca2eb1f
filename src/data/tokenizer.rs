//! Tokenizer: optional lowercasing, then tokens are maximal runs of
//! alphanumeric characters (Unicode `char::is_alphanumeric`); every other
//! character (whitespace, punctuation, symbols) separates tokens and is dropped.
//! At most `max_tokens` tokens are kept per example.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizerConfig {
    pub lowercase: bool,
    /// Cap on tokens per example (0 = no cap).
    pub max_tokens: usize,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig { lowercase: true, max_tokens: 1000 }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Tokenizer {
    config: TokenizerConfig,
}

impl Tokenizer {
    pub fn new(config: TokenizerConfig) -> Self {
        Tokenizer { config }
    }

    /// Appends the tokens of `text` to `out` (cleared first); reuses its allocation.
    pub fn tokenize_into(&self, text: &str, out: &mut Vec<String>) {
        out.clear();
        let cap = if self.config.max_tokens == 0 { usize::MAX } else { self.config.max_tokens };
        for token in text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()) {
            if out.len() == cap {
                break;
            }
            out.push(if self.config.lowercase { token.to_lowercase() } else { token.to_string() });
        }
    }

    /// Calls `each` with the tokens [`tokenize_into`](Self::tokenize_into) would
    /// collect, in order, allocating only for tokens that need lowercasing
    /// beyond ASCII. `lower` is scratch space.
    pub fn for_each_token(&self, text: &str, lower: &mut String, mut each: impl FnMut(&str)) {
        let cap = if self.config.max_tokens == 0 { usize::MAX } else { self.config.max_tokens };
        for (n, token) in text.split(|c: char| !c.is_alphanumeric()).filter(|t| !t.is_empty()).enumerate() {
            if n == cap {
                break;
            }
            if !self.config.lowercase || (token.is_ascii() && !token.bytes().any(|b| b.is_ascii_uppercase())) {
                each(token);
            } else if token.is_ascii() {
                lower.clear();
                lower.push_str(token);
                lower.make_ascii_lowercase();
                each(lower);
            } else {
                // str::to_lowercase is context-dependent (final sigma): use it as is.
                each(&token.to_lowercase());
            }
        }
    }

    pub fn tokenize(&self, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.tokenize_into(text, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_punctuation_and_lowercases() {
        let t = Tokenizer::new(TokenizerConfig::default());
        assert_eq!(t.tokenize("Hello, World! It's 2024—ok"), ["hello", "world", "it", "s", "2024", "ok"]);
        let capped = Tokenizer::new(TokenizerConfig { lowercase: false, max_tokens: 2 });
        assert_eq!(capped.tokenize("A b c"), ["A", "b"]);
    }

    #[test]
    fn for_each_token_gives_what_tokenize_collects() {
        let texts = ["Hello, World! It's 2024—ok", "ΟΔΟΣ ΣΑΣ, İstanbul straße ǅemal", "a", "", "x1 Y2 z3 W4"];
        for config in [TokenizerConfig::default(), TokenizerConfig { lowercase: false, max_tokens: 0 }, TokenizerConfig { lowercase: true, max_tokens: 3 }] {
            let t = Tokenizer::new(config);
            for text in texts {
                let mut seen = Vec::new();
                t.for_each_token(text, &mut String::new(), |w| seen.push(w.to_string()));
                assert_eq!(seen, t.tokenize(text), "{text:?} {:?}", t.config);
            }
        }
        // Final sigma is lowercased in context, as str::to_lowercase does.
        let mut seen = Vec::new();
        Tokenizer::new(TokenizerConfig::default()).for_each_token("ΟΔΟΣ", &mut String::new(), |w| seen.push(w.to_string()));
        assert_eq!(seen, ["οδος"]);
    }
}
