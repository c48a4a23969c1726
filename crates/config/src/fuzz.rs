//! The fuzzing entry point, shared by `fuzz/fuzz_targets/config_load.rs` (cargo fuzz) and the
//! property tests, so CI exercises the same code the fuzzer does.

use std::path::Path;

use mediamesh_edge::EdgeConfig;
use mediamesh_hub::HubConfig;

use crate::{LoadError, from_file, parse};

/// Loads `data` as a configuration file the way `mediamesh hub` and `mediamesh edge` do, short
/// of opening the files it names. Bytes after the first NUL are environment variables, one
/// `NAME=value` per line, so the overrides are fuzzed too.
///
/// Panics only on a real bug: an error that is not one line, or that names no place.
pub fn config_load(data: &[u8]) {
    let (text, env) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let text = &crate::line_breaks(text.to_owned());
    let vars: Vec<(String, String)> = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let path = Path::new("fuzz.yaml");
    // Parsed once, both blocks taken from it: the parse is most of the cost.
    match parse(path, text) {
        Ok(mut file) => {
            check(text, from_file::<HubConfig>(path, text, &mut file, &vars).map(drop));
            check(text, from_file::<EdgeConfig>(path, text, &mut file, &vars).map(drop));
        }
        Err(e) => check(text, Err(e)),
    }
}

fn check(text: &str, result: Result<(), LoadError>) {
    if let Err(e) = result {
        let shown = e.to_string();
        assert!(!shown.contains('\n'), "an error is one line: {shown:?}");
        if let LoadError::Parse { line, .. } | LoadError::Invalid { line, .. } = e {
            // The YAML parser names the line after the last for an error found at the end.
            assert!(line <= text.lines().count() + 1, "line {line} beyond the text: {shown}");
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::config_load;

    const SEEDS: [&str; 4] = [
        "cloudDataStream:\n  tlsTunnelCAFile: a\n  tlsTunnelCertFile: b\n  tlsTunnelPrivateKeyFile: c\n  streamPort: 1\n",
        "edgeDataStream:\n  server: hub:10006\n  nodeName: edge-1\n  streams:\n    cam: {rtsp: {url: \"rtsp://u:p@cam/x\"}}\n",
        "apiVersion: cloudcore.config.kubeedge.io/v1alpha2\nkind: CloudCore\nmodules:\n  cloudStream: {enable: true}\n",
        "cloudDataStream: &a\n  auth: {anonymous: [read]}\n  limits: *a\n\0MEDIAMESH_CLOUDDATASTREAM_STREAMPORT=x\n",
    ];

    #[test]
    fn seeds_load() {
        for s in SEEDS {
            config_load(s.as_bytes());
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            config_load(&data);
        }

        #[test]
        fn mutated_seeds_never_panic(seed in 0..SEEDS.len(), at in any::<prop::sample::Index>(), with in "[ -~\\n:\\[\\]{}&*!|>-]{0,12}") {
            let s = SEEDS[seed];
            let i = at.index(s.len() + 1);
            let i = (0..=i).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
            config_load(format!("{}{with}{}", &s[..i], &s[i..]).as_bytes());
        }
    }
}
