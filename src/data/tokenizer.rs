//! Tokenizer: text is split into tokens by [`Split`], each token is
//! optionally lowercased, and at most `max_tokens` tokens are kept per example.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizerConfig {
    /// How text is cut into tokens: "alnum" (default) or "whitespace".
    pub split: Split,
    pub lowercase: bool,
    /// Cap on tokens per example (0 = no cap).
    pub max_tokens: usize,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        TokenizerConfig { split: Split::Alnum, lowercase: true, max_tokens: 1000 }
    }
}

/// The token rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Tokens are maximal runs of alphanumeric characters (Unicode
    /// `char::is_alphanumeric`); every other character (whitespace,
    /// punctuation, symbols) separates tokens and is dropped.
    #[default]
    Alnum,
    /// fastText's rule: tokens are maximal runs of characters other than
    /// ASCII space, `\t`, `\n`, `\r`, `\x0b`, `\x0c` and `\0`, so punctuation
    /// stays in its token (`"end."`, `"(physics)"`, `"C++"`).
    Whitespace,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Alnum => "alnum",
            Split::Whitespace => "whitespace",
        }
    }

    /// Whether `c` separates tokens.
    fn separates(self, c: char) -> bool {
        match self {
            Split::Alnum => !c.is_alphanumeric(),
            // fastText's Dictionary::readWord: ' ', '\n', '\r', '\t', '\v', '\f', '\0'.
            Split::Whitespace => matches!(c, ' ' | '\n' | '\r' | '\t' | '\x0b' | '\x0c' | '\0'),
        }
    }

    /// The tokens of `text` before lowercasing, in order.
    pub fn pieces(self, text: &str) -> impl Iterator<Item = &str> {
        text.split(move |c: char| self.separates(c)).filter(|t| !t.is_empty())
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
        for token in self.config.split.pieces(text) {
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
        for (n, token) in self.config.split.pieces(text).enumerate() {
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
        let capped = Tokenizer::new(TokenizerConfig { split: Split::Alnum, lowercase: false, max_tokens: 2 });
        assert_eq!(capped.tokenize("A b c"), ["A", "b"]);
    }

    #[test]
    fn for_each_token_gives_what_tokenize_collects() {
        let texts = ["Hello, World! It's 2024—ok", "ΟΔΟΣ ΣΑΣ, İstanbul straße ǅemal", "a", "", "x1 Y2 z3 W4"];
        let configs = [
            TokenizerConfig::default(),
            TokenizerConfig { split: Split::Alnum, lowercase: false, max_tokens: 0 },
            TokenizerConfig { split: Split::Alnum, lowercase: true, max_tokens: 3 },
            TokenizerConfig { split: Split::Whitespace, lowercase: true, max_tokens: 0 },
            TokenizerConfig { split: Split::Whitespace, lowercase: false, max_tokens: 2 },
        ];
        for config in configs {
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

    /// fastText's `Dictionary::readWord`, byte by byte, as the reference: a
    /// word ends at one of seven ASCII bytes (fastText also emits an EOS token
    /// at a newline, which a one-line example never has).
    fn fasttext_words(text: &str) -> Vec<String> {
        let (mut words, mut word) = (Vec::new(), Vec::new());
        for &b in text.as_bytes().iter().chain(std::iter::once(&b' ')) {
            if [b' ', b'\n', b'\r', b'\t', 0x0b, 0x0c, 0].contains(&b) {
                if !word.is_empty() {
                    words.push(String::from_utf8(std::mem::take(&mut word)).unwrap());
                }
            } else {
                word.push(b);
            }
        }
        words
    }

    #[test]
    fn whitespace_split_is_fasttext_s_read_word() {
        let t = Tokenizer::new(TokenizerConfig { split: Split::Whitespace, lowercase: false, max_tokens: 0 });
        let texts = [
            "Hello, World! It's 2024—ok",
            "  tabs\tand\x0bvertical\x0cfeeds\r\n C++ (physics) e-mail\0nul ",
            // Unicode spaces are not separators in fastText: they stay inside tokens.
            "no\u{a0}break thin\u{2009}space ideographic\u{3000}space",
            "",
            "   ",
        ];
        for text in texts {
            assert_eq!(t.tokenize(text), fasttext_words(text), "{text:?}");
        }
        assert_eq!(t.tokenize("Hello, World! (x)"), ["Hello,", "World!", "(x)"]);
        let lower = Tokenizer::new(TokenizerConfig { split: Split::Whitespace, ..TokenizerConfig::default() });
        assert_eq!(lower.tokenize("ÜBER C++"), ["über", "c++"]);
    }
}
