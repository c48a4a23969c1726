//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`, minimized with `cargo fuzz
//! cmin`) through the same entry points the fuzz targets call, so a regression on any input
//! the fuzzer once found interesting shows in CI without cargo-fuzz or a nightly toolchain.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

type Entry = fn(&[u8]);

const TARGETS: [(&str, Entry); 11] = [
    ("tunnel_decode", mediamesh_tunnel::fuzz::decode_any),
    ("rtsp_request", mediamesh_hub::fuzz::rtsp_request),
    ("join_token", mediamesh_hub::fuzz::join_token),
    ("mse_client", mediamesh_hub::fuzz::mse_client),
    ("hls_request", mediamesh_hub::fuzz::hls_request),
    ("auth_parse", mediamesh_auth::fuzz::auth_parse),
    ("codec_config", mediamesh_media::fuzz::codec_config),
    ("config_load", mediamesh_config::fuzz::config_load),
    ("camera_sdp", mediamesh_edge::fuzz::camera_sdp),
    ("h264_split", mediamesh_media::fuzz::split_any),
    ("rtp_depacketize", mediamesh_media::fuzz::depacketize_any),
];

#[test]
fn every_committed_corpus_input_still_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let mut replayed = 0;
    for (target, entry) in TARGETS {
        let dir = std::fs::read_dir(root.join(target)).unwrap_or_else(|e| panic!("{target}: no corpus: {e}"));
        for file in dir {
            let path = file.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let run = std::panic::catch_unwind(|| entry(&data));
            assert!(run.is_ok(), "{target}: {} fails", path.display());
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no corpus under {}", root.display());
    println!("replayed {replayed} corpus inputs");
}
