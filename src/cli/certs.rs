//! `mediamesh certs`: a development PKI, grown one site at a time.

use std::path::PathBuf;

use clap::Args;
use mediamesh_tls::TlsError;
use mediamesh_tls::dev::{IssueRequest, LOCAL_HUB_NAMES};

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write into (created if missing). A CA already there signs what is issued.
    #[arg(long, short, default_value = "certs")]
    out: PathBuf,
    /// A name (DNS name or IP address) edges reach the hub by; repeat for several. Issues the
    /// hub's certificate for exactly these names. Without it, a hub certificate is made only if
    /// there is none, for this machine alone (localhost, 127.0.0.1, ::1).
    #[arg(long = "hub-name", value_name = "NAME")]
    hub_names: Vec<String>,
    /// An edge node to issue a certificate for; repeat for several.
    #[arg(long = "node", value_name = "NODE")]
    nodes: Vec<String>,
    /// Replace certificates and keys that exist (the CA is never replaced).
    #[arg(long)]
    force: bool,
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    for n in &args.nodes {
        if let Err(reason) = mediamesh_tunnel::wire::validate_name(n) {
            anyhow::bail!("--node {n:?}: {reason}");
        }
    }
    for name in &args.hub_names {
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
            anyhow::bail!("--hub-name {name:?}: not a DNS name or IP address");
        }
    }
    let request = IssueRequest {
        hub_names: (!args.hub_names.is_empty()).then(|| args.hub_names.clone()),
        nodes: args.nodes.clone(),
        force: args.force,
    };
    let issued = match mediamesh_tls::dev::issue(&args.out, &request) {
        Err(TlsError::Exists { path }) => anyhow::bail!(
            "{} already exists; nothing was written. mediamesh certs never replaces a certificate or key unless \
             given --force (and never the CA, so edges it signed keep working)",
            path.display()
        ),
        other => other?,
    };
    let ca = if issued.ca_created { "created" } else { "existing, kept; it signed what follows" };
    println!("CA:   {} ({ca})", issued.ca_cert.display());
    match &issued.hub {
        Some((files, names)) => {
            println!("hub:  {} {} (names: {})", files.cert.display(), files.key.display(), names.join(", "));
            if names.iter().all(|n| LOCAL_HUB_NAMES.contains(&n.as_str())) {
                println!(
                    "      This hub certificate names only this machine. For edges on other machines, issue it for \
                     the names they dial: --hub-name hub.example.com --hub-name 203.0.113.7 --force"
                );
            }
        }
        None => println!("hub:  kept (give --hub-name to issue it for other names)"),
    }
    for (node, f) in &issued.edges {
        println!("edge {node}: {} {}", f.cert.display(), f.key.display());
    }
    println!("These are for development: the keys are unencrypted (mode 0600).");
    Ok(())
}
