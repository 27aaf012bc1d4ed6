//! `enclosure dev …`: conveniences for the local dev stack, never for production.
//!
//! `enclosure dev token` signs a JWT with the dev key of a data directory, the key the dev
//! api started with `enclosure up --data-dir DIR` trusts. A production api refuses such tokens:
//! it refuses the dev key, the dev issuer and any JWKS entry marked as dev.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use enclosure_api::auth::{DEV_MAX_TTL, KeySource, Role, ensure_dev_key, mint_dev_token};
use enclosure_api::{ApiConfig, Mode};

/// Dev-only commands.
#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Print a bearer token signed by the dev key of a data directory.
    Token(TokenArgs),
}

/// Options of `enclosure dev token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The data directory of the dev stack (as given to `enclosure up`).
    #[arg(long, env = "ENCLOSURE_DATA_DIR", default_value = "./enclosure-data")]
    pub data_dir: PathBuf,
    /// The subject: who the token speaks for.
    #[arg(long)]
    pub sub: String,
    /// The role: client, freelancer, admin, system or reviewer.
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
    /// Lifetime: seconds, or a number with s, m, h or d (at most 24h).
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
}

/// Runs a dev command.
pub fn run(cmd: DevCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        DevCommand::Token(args) => token(args),
    }
}

fn token(args: TokenArgs) -> anyhow::Result<ExitCode> {
    // A mistyped directory would silently get a fresh key the stack does not trust.
    if !args.data_dir.is_dir() {
        bail!(
            "no data directory {}: pass the --data-dir of `enclosure up`",
            args.data_dir.display()
        );
    }
    check_stack_trusts_the_dev_key(&args.data_dir)?;
    let paths = ensure_dev_key(&args.data_dir)
        .with_context(|| format!("the dev key of {}", args.data_dir.display()))?;
    let token = mint_dev_token(
        &args.data_dir,
        &args.sub,
        args.role,
        args.ttl,
        SystemTime::now(),
    )
    .context("signing the dev token")?;
    eprintln!(
        "DEV token for {} ({}), valid {} s, signed by {} (kid {}); production refuses it",
        args.sub,
        args.role,
        args.ttl.as_secs(),
        paths.private_key.display(),
        paths.kid
    );
    println!("{token}");
    Ok(ExitCode::SUCCESS)
}

/// Refuses when the api configuration `enclosure up` wrote into the data directory says the
/// stack would not accept a dev token: production mode, or configured JWT keys.
fn check_stack_trusts_the_dev_key(data_dir: &Path) -> anyhow::Result<()> {
    let path = data_dir.join("api.toml");
    if !path.exists() {
        // The stack has not started yet; it will adopt the key generated now.
        return Ok(());
    }
    let config = match ApiConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warning: cannot read {}: {e}", path.display());
            return Ok(());
        }
    };
    if config.mode == Mode::Production {
        bail!(
            "the stack of {} runs in production mode, which refuses dev tokens",
            data_dir.display()
        );
    }
    match config.auth_config() {
        Ok(auth) if auth.keys != KeySource::Dev => bail!(
            "the api of {} trusts configured JWT keys, not the dev key",
            data_dir.display()
        ),
        _ => Ok(()),
    }
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse().map_err(|_| {
        let names: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        format!("expected one of {}", names.join(", "))
    })
}

fn parse_ttl(s: &str) -> Result<Duration, String> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with s, m, h or d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    let ttl = Duration::from_secs(n.saturating_mul(scale));
    if ttl.is_zero() || ttl > DEV_MAX_TTL {
        return Err(format!(
            "{s:?}: between 1s and {}h",
            DEV_MAX_TTL.as_secs() / 3600
        ));
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        dev: DevCommand,
    }

    #[test]
    fn ttls_parse() {
        assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_ttl("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_ttl("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("1d").unwrap(), Duration::from_secs(86_400));
        for bad in ["", "0", "2d", "1w", "h", "-1h", "1.5h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn roles_parse() {
        assert_eq!(parse_role("reviewer").unwrap(), Role::Reviewer);
        assert!(parse_role("root").unwrap_err().contains("client"));
    }

    #[test]
    fn a_token_is_minted_for_an_existing_data_dir() {
        let dir = std::env::temp_dir().join(format!("enclosure-dev-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir_arg = dir.to_str().unwrap();
        let cli = Cli::try_parse_from([
            "t",
            "token",
            "--data-dir",
            dir_arg,
            "--sub",
            "alice",
            "--role",
            "client",
        ])
        .unwrap();
        assert_eq!(run(cli.dev).unwrap(), ExitCode::SUCCESS);
        assert!(dir.join("auth/dev-jwt-key.pem").exists());
        let missing = dir.join("nope");
        let cli = Cli::try_parse_from([
            "t",
            "token",
            "--data-dir",
            missing.to_str().unwrap(),
            "--sub",
            "alice",
            "--role",
            "client",
        ])
        .unwrap();
        assert!(run(cli.dev).is_err());

        // A stack configured for production, or with its own JWT keys, gets no dev token.
        let args = |dir: &Path| {
            let cli = Cli::try_parse_from([
                "t",
                "token",
                "--data-dir",
                dir.to_str().unwrap(),
                "--sub",
                "alice",
                "--role",
                "admin",
            ])
            .unwrap();
            cli.dev
        };
        let stack = "listen = \"127.0.0.1:1\"\nenclave = \"unix:///x.sock\"\n";
        for refused in [
            format!("mode = \"production\"\ntls_cert = \"c\"\ntls_key = \"k\"\n{stack}"),
            format!(
                "mode = \"dev\"\n{stack}[auth]\nissuer = \"i\"\naudience = \"a\"\njwks_file = \"/j\"\n"
            ),
        ] {
            std::fs::write(dir.join("api.toml"), refused).unwrap();
            assert!(run(args(&dir)).is_err());
        }
        std::fs::write(dir.join("api.toml"), format!("mode = \"dev\"\n{stack}")).unwrap();
        assert_eq!(run(args(&dir)).unwrap(), ExitCode::SUCCESS);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
