//! `mediamesh hub` and `mediamesh edge`.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use mediamesh_edge::Edge;
use mediamesh_hub::Hub;
use tracing::info;

use crate::config::{LoadError, load};

pub async fn hub(path: &Path) -> anyhow::Result<()> {
    let (file, text) = load(path)?;
    let cfg = file.cloud.ok_or_else(|| LoadError::Missing {
        path: path.into(),
        message: "no cloudDataStream block; `mediamesh hub` needs one".into(),
    })?;
    if !cfg.enable {
        info!("cloudDataStream.enable is false; nothing to do");
        return Ok(());
    }
    if let Err(e) = cfg.validate() {
        return Err(LoadError::invalid(path, &text, e.to_string()).into());
    }
    let hub = Hub::bind(cfg).await.context("starting the hub")?;
    let rtsp = hub.rtsp_url("NODE", "STREAM").map(|u| format!(", RTSP at {u}")).unwrap_or_default();
    println!("mediamesh hub ready: viewers and API at {}{rtsp}, edges at {}", hub.base_url(), hub.tunnel_addr);
    super::stop_signal().await;
    info!("stopping");
    hub.stop(Duration::from_secs(5)).await;
    Ok(())
}

pub async fn edge(path: &Path) -> anyhow::Result<()> {
    let (file, text) = load(path)?;
    let cfg = file.edge.ok_or_else(|| LoadError::Missing {
        path: path.into(),
        message: "no edgeDataStream block; `mediamesh edge` needs one".into(),
    })?;
    if !cfg.enable {
        info!("edgeDataStream.enable is false; nothing to do");
        return Ok(());
    }
    if let Err(e) = cfg.validate() {
        return Err(LoadError::invalid(path, &text, e.to_string()).into());
    }
    let edge = Edge::start(cfg).context("starting the edge agent")?;
    super::stop_signal().await;
    info!("stopping");
    edge.stop(Duration::from_secs(5)).await;
    Ok(())
}
