//! `mediamesh auth`: make what the `auth` block needs.
//!
//! - `hash-password` reads a password (stdin, or a prompt on a terminal) and prints its argon2id
//!   hash for `users[].password` and, with `--user`, the Digest entry for RTSP Digest;
//! - `keygen` writes an Ed25519 key pair for `jwt.keyFile` (the public half) and token signing;
//! - `token` signs a token with a private key for viewers, scripts and tests.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use mediamesh_auth::jwt::{Minter, algorithm, ed25519_pair};
use mediamesh_auth::{Permission, Secret};

#[derive(Debug, Args)]
pub struct AuthArgs {
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Debug, Subcommand)]
enum AuthCommand {
    /// Print the argon2id hash of a password read from stdin (for `auth.users[].password`).
    HashPassword {
        /// Also print the RTSP Digest entry (`auth.users[].digest`) for this user name.
        #[arg(long)]
        user: Option<String>,
    },
    /// Write an Ed25519 key pair: `jwt.pem` (private, 0600) signs tokens, `jwt.pub.pem` goes in
    /// `auth.jwt.keyFile`.
    Keygen {
        /// The folder to write into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Print a signed token.
    Token {
        /// The private key (PEM), e.g. the `jwt.pem` of `keygen`.
        #[arg(long)]
        key: PathBuf,
        /// Its algorithm.
        #[arg(long, default_value = "EdDSA")]
        alg: String,
        /// A permission, as in the configuration (`read:edge-1/*`, `api`); repeat for more.
        #[arg(long = "grant", required = true)]
        grants: Vec<Permission>,
        /// How long it is valid: `90s`, `15m`, `12h`, `7d`.
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// `sub`: who the token is for (shown in the hub's logs).
        #[arg(long, default_value = "viewer")]
        subject: String,
        /// `iss`, if the hub checks one.
        #[arg(long)]
        issuer: Option<String>,
        /// `aud`, if the hub checks one.
        #[arg(long)]
        audience: Option<String>,
        /// The claim that carries the permissions.
        #[arg(long, default_value = "mediamesh_permissions")]
        claim: String,
    },
}

pub fn run(args: AuthArgs) -> anyhow::Result<()> {
    match args.command {
        AuthCommand::HashPassword { user } => hash_password(user.as_deref()),
        AuthCommand::Keygen { out } => keygen(&out),
        AuthCommand::Token { key, alg, grants, ttl, subject, issuer, audience, claim } => {
            let alg = algorithm(&alg)?;
            let pem = std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?;
            let minter = Minter::from_pem(&pem, alg)?;
            let ttl = parse_ttl(&ttl)?;
            let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + ttl;
            let token = minter.mint(&subject, &grants, exp, issuer.as_deref(), audience.as_deref(), &claim)?;
            println!("{token}");
            Ok(())
        }
    }
}

fn hash_password(user: Option<&str>) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("password: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line).context("reading the password from stdin")?;
    let password = Secret::new(line.trim_end_matches(['\r', '\n']));
    anyhow::ensure!(!password.is_empty(), "the password is empty");
    let hash = mediamesh_auth::password::hash(&password)?;
    println!("password: \"{}\"", hash.as_str());
    if let Some(user) = user {
        println!("digest: \"{}\"", mediamesh_auth::digest::ha1(user, password.expose()));
    }
    Ok(())
}

fn keygen(out: &std::path::Path) -> anyhow::Result<()> {
    let (_, public, private) = ed25519_pair()?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let private_path = out.join("jwt.pem");
    write_private(&private_path, &private)?;
    let public_path = out.join("jwt.pub.pem");
    std::fs::write(&public_path, public).with_context(|| format!("writing {}", public_path.display()))?;
    println!(
        "wrote {} (signs tokens: keep it secret) and {} (for auth.jwt.keyFile)",
        private_path.display(),
        public_path.display()
    );
    Ok(())
}

/// Writes a secret file readable by its owner only.
pub fn write_private(path: &std::path::Path, contents: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `90s`, `15m`, `12h`, `7d` (or bare seconds) as seconds.
pub fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().with_context(|| format!("--ttl {s:?}: expected a number and s, m, h or d"))?;
    let mult = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => anyhow::bail!("--ttl {s:?}: the unit is s, m, h or d"),
    };
    Ok(n * mult)
}
