//! What only the `sparseburn` binary needs: log output, Ctrl-C and the
//! progress display. The library reports through `log` and observers.

pub mod progress;

use std::io::Write;

use sparseburn::cancel::CancelToken;

/// Log records go to stderr as the CLI always printed them: info as is,
/// warnings and errors with a prefix. `RUST_LOG` overrides the levels
/// (default: this crate's info and up, other crates' warnings).
pub fn init_logging() {
    let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,sparseburn=info"))
        .format(|out, record| match record.level() {
            log::Level::Info => writeln!(out, "{}", record.args()),
            log::Level::Warn => writeln!(out, "warning: {}", record.args()),
            log::Level::Error => writeln!(out, "error: {}", record.args()),
            level => writeln!(out, "{level} {}: {}", record.target(), record.args()),
        })
        .try_init();
}

/// `logging.quiet`: only warnings and errors.
pub fn quiet_logging() {
    log::set_max_level(log::LevelFilter::Warn.min(log::max_level()));
}

/// The first Ctrl-C cancels `token` (the run checkpoints and stops, or a
/// comparison starts no new run); a second one exits at once.
pub fn cancel_on_ctrl_c(token: &CancelToken, what: &'static str) {
    let token = token.clone();
    let _ = ctrlc::set_handler(move || {
        if token.cancel() {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: {what} (Ctrl-C again to abort)");
    });
}
