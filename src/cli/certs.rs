//! `mediamesh certs`: a development PKI.

use std::path::PathBuf;

use clap::Args;

#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Directory to write into (created if missing).
    #[arg(long, short, default_value = "certs")]
    out: PathBuf,
    /// A name (DNS or IP) the hub is reached by; repeat for several.
    #[arg(long = "hub-name", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()])]
    hub_names: Vec<String>,
    /// An edge node to issue a certificate for; repeat for several.
    #[arg(long = "node")]
    nodes: Vec<String>,
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    for n in &args.nodes {
        if let Err(reason) = mediamesh_tunnel::wire::validate_name(n) {
            anyhow::bail!("--node {n:?}: {reason}");
        }
    }
    let pki = mediamesh_tls::dev::write_pki(&args.out, &args.hub_names, &args.nodes)?;
    println!("CA:  {}", pki.ca_cert.display());
    println!("hub: {} {} (names: {})", pki.hub.cert.display(), pki.hub.key.display(), args.hub_names.join(", "));
    for (node, f) in &pki.edges {
        println!("edge {node}: {} {}", f.cert.display(), f.key.display());
    }
    println!("These are for development: the keys are unencrypted.");
    Ok(())
}
