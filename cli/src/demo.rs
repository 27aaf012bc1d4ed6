//! `enclosure demo`: one whole escrow between two dev users, against the local stack.
//!
//! alice (client) and bob (freelancer) get dev tokens from the data directory. The demo
//! verifies the enclave's attestation, opens a room, funds its milestone at the payments
//! sandbox, uploads and submits bob's work, waits for the api's scheduler to validate it,
//! accepts, waits for the swap to pay bob out, then downloads the work as alice and checks its
//! SHA-256. Each step prints one line; a failed step prints `✗ <step>: <reason>` on stderr and
//! the demo exits 1 (2 when it could not run at all: no stack, nothing to start).
//!
//! It reuses the stack `enclosure up --data-dir DIR` runs, or starts one itself (the same
//! binary, `up`, as a child) and stops it when it is done, whatever the outcome.
//!
//! Tokens, the sandbox API key and presigned URLs' query strings are never printed.

mod escrow;
mod http;
mod stack;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;

/// Options of `enclosure demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Data directory of the stack (as given to `enclosure up`).
    #[arg(long, default_value = "./enclosure-data")]
    pub data_dir: PathBuf,
    /// The api's address. Default: the `listen` recorded in DIR/api.toml, else 127.0.0.1:8443.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Where a stack the demo starts runs its payments sandbox. Default: as recorded in
    /// DIR/api.toml, else 127.0.0.1:8790.
    #[arg(long)]
    pub payments_listen: Option<SocketAddr>,
    /// Where a stack the demo starts runs its artifact store. Default: as recorded in
    /// DIR/api.toml, else 127.0.0.1:9300.
    #[arg(long)]
    pub s3_listen: Option<SocketAddr>,
    /// How long, in seconds, a waiting step (stack start, webhook, validation, swap) may take.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

/// Why the demo stopped: the step, the reason, and the exit code.
#[derive(Debug)]
pub struct Failed {
    step: &'static str,
    reason: anyhow::Error,
    code: u8,
}

impl Failed {
    /// A step that ran and failed, or a check that did not hold: exit code 1.
    fn step(step: &'static str, reason: anyhow::Error) -> Self {
        Failed {
            step,
            reason,
            code: 1,
        }
    }

    /// The demo could not run at all (no stack, bad data directory): exit code 2.
    fn setup(step: &'static str, reason: anyhow::Error) -> Self {
        Failed {
            step,
            reason,
            code: 2,
        }
    }
}

/// Attaches a step name to an error.
trait StepExt<T> {
    /// Failing here is a failed step (exit 1).
    fn step(self, step: &'static str) -> Result<T, Failed>;
    /// Failing here means the demo cannot run (exit 2).
    fn setup(self, step: &'static str) -> Result<T, Failed>;
}

impl<T, E: Into<anyhow::Error>> StepExt<T> for Result<T, E> {
    fn step(self, step: &'static str) -> Result<T, Failed> {
        self.map_err(|e| Failed::step(step, e.into()))
    }

    fn setup(self, step: &'static str) -> Result<T, Failed> {
        self.map_err(|e| Failed::setup(step, e.into()))
    }
}

/// One finished step.
fn done(line: impl std::fmt::Display) {
    say(format_args!("✓ {line}"));
}

/// Something under way (starting a stack, waiting for an event).
fn progress(line: impl std::fmt::Display) {
    say(format_args!("  … {line}"));
}

/// A line on stdout. A closed stdout (`enclosure demo | head`) must not panic mid-escrow: a
/// panic would skip stopping the stack the demo started.
fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// A line on stderr, likewise without panicking.
fn complain(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Runtime::new()?;
    Ok(rt.block_on(run_async(args)))
}

async fn run_async(args: DemoArgs) -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let started = Instant::now();
    say(format_args!(
        "Enclosure demo: an escrow between alice (client) and bob (freelancer), data in {}",
        args.data_dir.display()
    ));
    let timeout = Duration::from_secs(args.timeout);
    let mut own: Option<stack::OwnStack> = None;
    let result = {
        let work = async {
            let stack = stack::find_or_start(&args, &mut own).await?;
            escrow::run(&args.data_dir, &stack, timeout).await
        };
        tokio::select! {
            r = work => r,
            why = interrupted() => Err(Failed::setup("demo", anyhow::anyhow!("{why}"))),
        }
    };
    let code = match result {
        Ok(()) => {
            done(format!(
                "demo complete in {:.1} s",
                started.elapsed().as_secs_f64()
            ));
            ExitCode::SUCCESS
        }
        Err(f) => {
            complain(format_args!("✗ {}: {:#}", f.step, f.reason));
            ExitCode::from(f.code)
        }
    };
    // A stack the demo started stops now, whatever happened.
    if let Some(s) = own.take() {
        s.stop().await;
    }
    code
}

/// Resolves on Ctrl-C or SIGTERM, so a stack the demo started is stopped either way.
async fn interrupted() -> &'static str {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    match term {
        Ok(mut term) => tokio::select! {
            _ = tokio::signal::ctrl_c() => "interrupted (Ctrl-C)",
            _ = term.recv() => "terminated (SIGTERM)",
        },
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            "interrupted (Ctrl-C)"
        }
    }
}

/// `minor` units of `currency` as text, e.g. `500.00 EUR` (two decimals, as for EUR).
fn money(minor: i64, currency: &str) -> String {
    let sign = if minor < 0 { "-" } else { "" };
    let m = minor.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", m / 100, m % 100)
}

/// The first `n` hex digits of `bytes` and an ellipsis, for one-line display.
fn short_hex(bytes: &[u8], n: usize) -> String {
    let h = hex::encode(bytes);
    if h.len() <= n {
        h
    } else {
        format!("{}…", &h[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        demo: DemoArgs,
    }

    #[test]
    fn amounts_print_in_major_units() {
        assert_eq!(money(50_000, "EUR"), "500.00 EUR");
        assert_eq!(money(48_750, "EUR"), "487.50 EUR");
        assert_eq!(money(5, "EUR"), "0.05 EUR");
        assert_eq!(money(-1_250, "EUR"), "-12.50 EUR");
    }

    #[test]
    fn hex_is_shortened() {
        assert_eq!(short_hex(&[0xab, 0xcd], 8), "abcd");
        assert_eq!(short_hex(&[0xab, 0xcd, 0xef], 4), "abcd…");
    }

    #[test]
    fn flags_parse() {
        let c = Cli::try_parse_from(["t"]).unwrap().demo;
        assert_eq!(c.data_dir, PathBuf::from("./enclosure-data"));
        assert!(c.listen.is_none() && c.payments_listen.is_none() && c.s3_listen.is_none());
        assert_eq!(c.timeout, 60);
        let c = Cli::try_parse_from([
            "t",
            "--data-dir",
            "/x",
            "--listen",
            "127.0.0.1:1",
            "--payments-listen",
            "127.0.0.1:2",
            "--s3-listen",
            "127.0.0.1:3",
            "--timeout",
            "5",
        ])
        .unwrap()
        .demo;
        assert_eq!(c.listen, Some("127.0.0.1:1".parse().unwrap()));
        assert_eq!(c.timeout, 5);
        assert!(Cli::try_parse_from(["t", "--timeout", "0"]).is_err());
    }
}
