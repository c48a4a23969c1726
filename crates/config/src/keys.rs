//! Where keys are in the text, and which keys exist: the dotted key of an error's line, the
//! line of a dotted key, and "did you mean" for a key that does not exist.
//!
//! Which keys exist comes from the configuration types themselves: a block's *schema* is an
//! instance with every optional part filled in, serialized ([`super::Block::schema`]). A map
//! whose keys are the user's own (the edge's `streams`) has one entry, `*`, standing for any.

use serde_json::Value;

/// The dotted path of the key written on `line` (1-based) of block-style YAML.
pub fn key_at_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let target = lines.get(line.checked_sub(1)?)?;
    let (indent, key) = key_of(target)?;
    let mut path = vec![key];
    let mut want = indent;
    for l in lines[..line - 1].iter().rev() {
        if let Some((i, k)) = key_of(l)
            && i < want
        {
            path.push(k);
            want = i;
            if i == 0 {
                break;
            }
        }
    }
    path.reverse();
    Some(path.join("."))
}

/// The line (1-based) where a dotted key is written, if it is, on its own or under KubeEdge's
/// `modules`.
pub fn find_key_line(text: &str, dotted: &str) -> Option<usize> {
    find_exact(text, dotted).or_else(|| find_exact(text, &format!("modules.{dotted}")))
}

fn find_exact(text: &str, dotted: &str) -> Option<usize> {
    let mut path: Vec<(usize, String)> = Vec::new();
    for (n, l) in text.lines().enumerate() {
        let Some((indent, key)) = key_of(l) else { continue };
        while path.last().is_some_and(|(i, _)| *i >= indent) {
            path.pop();
        }
        path.push((indent, key));
        if path.iter().map(|(_, k)| k.as_str()).eq(dotted.split('.')) {
            return Some(n + 1);
        }
    }
    None
}

/// `(indent, key)` of a `key: ...` line; comments, list items and blank lines give `None`.
fn key_of(line: &str) -> Option<(usize, String)> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('-') {
        return None;
    }
    let (key, _) = trimmed.split_once(':')?;
    let key = key.trim().trim_matches(['"', '\'']);
    (!key.is_empty() && !key.contains(' ')).then(|| (line.len() - trimmed.len(), key.to_owned()))
}

/// The schema node at `path` (segments below the block), following `*` for user-named keys.
pub fn schema_at<'a>(schema: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(schema, |node, seg| {
        let map = node.as_object()?;
        map.get(*seg).or_else(|| map.get("*"))
    })
}

/// If `dotted` (a path from the file's top, maybe under `modules.`) names a key that does not
/// exist in `schema` (the block named `block`), the message for it: the key and the nearest
/// existing key at that level, or the keys there are.
pub fn unknown_key(schema: &Value, block: &str, dotted: &str) -> Option<String> {
    let dotted = dotted.strip_prefix("modules.").unwrap_or(dotted);
    let rest = dotted.strip_prefix(block)?.strip_prefix('.')?;
    let segments: Vec<&str> = rest.split('.').collect();
    let (last, parent) = segments.split_last()?;
    let parent = schema_at(schema, parent)?.as_object()?;
    if parent.contains_key(*last) || parent.contains_key("*") {
        return None;
    }
    let keys: Vec<&str> = parent.keys().map(String::as_str).collect();
    Some(match nearest(last, &keys) {
        Some(near) => format!("unknown key `{last}`; did you mean `{near}`?"),
        None => format!("unknown key `{last}`; the keys here are {}", keys.join(", ")),
    })
}

/// The candidate closest to `word`, if it is close: at most a third of its letters differ (and
/// at least one may), ignoring case.
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let w = word.to_lowercase();
    candidates
        .iter()
        .map(|c| (edit_distance(&w, &c.to_lowercase()), *c))
        .filter(|(d, c)| *d <= (c.chars().count().max(w.chars().count()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance in characters, a swap of two neighbours counting as one edit (the optimal
/// string alignment distance): `prot` is one edit from `port`.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# comment\ncloudDataStream:\n  streamPort: 1\n  frameLog:\n    maxFrames: 3\nedgeDataStream:\n  streams:\n    cam1:\n      testPattern:\n        width: 641\n";

    #[test]
    fn key_paths_and_lines() {
        assert_eq!(key_at_line(DOC, 3).as_deref(), Some("cloudDataStream.streamPort"));
        assert_eq!(key_at_line(DOC, 5).as_deref(), Some("cloudDataStream.frameLog.maxFrames"));
        assert_eq!(key_at_line(DOC, 10).as_deref(), Some("edgeDataStream.streams.cam1.testPattern.width"));
        assert_eq!(find_key_line(DOC, "cloudDataStream.frameLog.maxFrames"), Some(5));
        assert_eq!(find_key_line(DOC, "edgeDataStream.streams.cam1.testPattern"), Some(9));
        assert_eq!(find_key_line(DOC, "cloudDataStream.maxFrames"), None);
        let wrapped = "kind: CloudCore\nmodules:\n  cloudDataStream:\n    linger: 3\n";
        assert_eq!(find_key_line(wrapped, "cloudDataStream.linger"), Some(4));
    }

    #[test]
    fn near_misses_get_a_suggestion() {
        let schema = serde_json::json!({"linger": 1, "gracePeriod": 1, "rtsp": {"port": 1, "udp": true},
            "streams": {"*": {"testPattern": {"width": 1}}}});
        let m = |d| unknown_key(&schema, "cloudDataStream", d);
        assert_eq!(m("cloudDataStream.lingr").as_deref(), Some("unknown key `lingr`; did you mean `linger`?"));
        assert_eq!(
            m("cloudDataStream.graceperiod").as_deref(),
            Some("unknown key `graceperiod`; did you mean `gracePeriod`?")
        );
        assert_eq!(m("modules.cloudDataStream.rtsp.prot").as_deref(), Some("unknown key `prot`; did you mean `port`?"));
        assert_eq!(
            m("cloudDataStream.streams.cam1.testPatern").as_deref(),
            Some("unknown key `testPatern`; did you mean `testPattern`?")
        );
        assert_eq!(edit_distance("prot", "port"), 1);
        assert_eq!(edit_distance("lingr", "linger"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert!(m("cloudDataStream.banana").unwrap().contains("the keys here are gracePeriod, linger, rtsp, streams"));
        assert_eq!(m("cloudDataStream.linger"), None, "a known key");
        assert_eq!(m("cloudDataStream.streams.anyName"), None, "user-named keys are all known");
        assert_eq!(m("edgeDataStream.linger"), None, "another block");
    }
}
