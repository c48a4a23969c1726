//! A WebSocket viewer of edge-1/cam1 in a task of its own, for tests that restart hubs under
//! it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mediamesh_hub::client::{ConnectOptions, ViewerClient, ViewerItem};
use mediamesh_testkit::read_frames;

/// A WebSocket viewer in a task of its own, recording the longest wait between two frames
/// and how it ended.
pub struct Watch {
    /// The hub it watches on.
    pub hub: String,
    state: std::sync::Arc<std::sync::Mutex<WatchState>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct WatchState {
    frames: u64,
    last: Option<Instant>,
    max_gap: Duration,
    ended: Option<String>,
}

impl Watch {
    /// Watches edge-1/cam1 on the hub `hub` whose stream port is `api`.
    pub async fn start(hub: &str, api: SocketAddr) -> Self {
        let url = format!("ws://{api}/api/v1/nodes/edge-1/streams/cam1/ws");
        let mut v = ViewerClient::connect(&url, &ConnectOptions::default()).await.unwrap();
        read_frames(&mut v, 5).await;
        let state = std::sync::Arc::new(std::sync::Mutex::new(WatchState::default()));
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let item = v.next().await;
                let mut st = s.lock().unwrap();
                match item {
                    Ok(Some(ViewerItem::Frame(_))) => {
                        let now = Instant::now();
                        if let Some(last) = st.last {
                            st.max_gap = st.max_gap.max(now - last);
                        }
                        st.last = Some(now);
                        st.frames += 1;
                    }
                    Ok(Some(ViewerItem::End(reason))) => {
                        st.ended = Some(reason);
                        return;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        st.ended = Some("closed without an end".into());
                        return;
                    }
                    Err(e) => {
                        st.ended = Some(format!("error: {e}"));
                        return;
                    }
                }
            }
        });
        Self { hub: hub.to_owned(), state, task }
    }

    /// Forgets the longest gap so far.
    pub fn reset(&self) {
        let mut st = self.state.lock().unwrap();
        st.max_gap = Duration::ZERO;
    }

    /// The longest gap since the last reset (counting the wait since the last frame), frames,
    /// and how it ended.
    pub fn report(&self) -> (Duration, u64, Option<String>) {
        let st = self.state.lock().unwrap();
        let since_last = st.last.map_or(Duration::ZERO, |l| l.elapsed());
        (st.max_gap.max(since_last), st.frames, st.ended.clone())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
