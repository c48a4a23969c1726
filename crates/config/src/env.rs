//! Environment variables that override configuration keys, for containers (as MediaMTX's
//! `MTX_*`).
//!
//! The rule: `MEDIAMESH_` + the block + `_` + each key of the path, upper-cased and joined by
//! `_`. Keys match without regard to case, so `MEDIAMESH_CLOUDDATASTREAM_RTSP_PORT=8555` sets
//! `cloudDataStream.rtsp.port`, and `MEDIAMESH_EDGEDATASTREAM_STREAMS_FRONT_DOOR_RTSP_URL` sets
//! `edgeDataStream.streams.front_door.rtsp.url` (a name with `_` is matched whole). A variable
//! overrides a key the file has or one it could have; it cannot add a stream the file does not
//! name. The value is read as YAML (`5`, `true`, `[-i, x]`, `10s`), except where the key holds
//! text, which takes the value exactly as given. Other `MEDIAMESH_` variables
//! (`MEDIAMESH_LOG_FORMAT`) are not configuration keys and are left alone.

use serde_json::{Map, Value};

use super::{Block, LoadError, keys, one_line};

const PREFIX: &str = "MEDIAMESH_";

/// An environment variable that set a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The variable.
    pub var: String,
    /// The key it set, dotted from the block (`edgeDataStream.server`).
    pub dotted: String,
}

/// Applies the variables of `vars` that address block `T` to `config`.
pub fn apply<T: Block>(config: T, vars: &[(String, String)]) -> Result<(T, Vec<Override>), LoadError> {
    let head = format!("{PREFIX}{}_", T::NAME.to_uppercase());
    let mut mine: Vec<(&str, &str, &str)> = vars
        .iter()
        .filter(|(k, _)| k.to_uppercase().starts_with(&head))
        .map(|(k, v)| (k.as_str(), &k[head.len()..], v.as_str()))
        .collect();
    if mine.is_empty() {
        return Ok((config, Vec::new()));
    }
    mine.sort();
    let internal = |var: &str, what: &str, e: serde_json::Error| LoadError::Env {
        var: var.into(),
        reason: format!("{what}: {e}"),
    };
    let schema = T::schema();
    let mut value = serde_json::to_value(&config).map_err(|e| internal(mine[0].0, "the configuration", e))?;
    let mut overrides = Vec::new();
    for (var, rest, raw) in mine {
        let path = resolve(&value, &schema, &rest.to_uppercase()).ok_or_else(|| LoadError::Env {
            var: var.into(),
            reason: format!("no such key in {} (the rule: {PREFIX}<BLOCK>_<KEY>_<KEY>..., keys upper-cased)", T::NAME),
        })?;
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        let text_key = keys::schema_at(&schema, &segments).is_some_and(Value::is_string);
        let new = if text_key { Value::String(raw.into()) } else { yaml_value(raw) };
        set(&mut value, &path, new);
        overrides.push(Override { var: var.into(), dotted: format!("{}.{}", T::NAME, path.join(".")) });
    }
    let config = serde_json::from_value(value).map_err(|e| {
        // Only the variables can have made a file that parsed on its own fail: name them.
        let vars: Vec<&str> = overrides.iter().map(|o| o.var.as_str()).collect();
        LoadError::Env { var: vars.join(", "), reason: one_line(&mediamesh_edge::redact::text(&e.to_string())) }
    })?;
    Ok((config, overrides))
}

/// The key path `rest` (upper-cased, `_`-joined) names, below `node` (the current values) and
/// `schema` (which keys may exist). Several splits can fit when names hold `_`: the longest key
/// that leads to a whole match wins.
fn resolve(node: &Value, schema: &Value, rest: &str) -> Option<Vec<String>> {
    let empty = Map::new();
    let actual = node.as_object().unwrap_or(&empty);
    let known = schema.as_object().unwrap_or(&empty);
    let mut candidates: Vec<&String> = actual.keys().chain(known.keys()).filter(|k| *k != "*").collect();
    candidates.sort_by(|a, b| b.len().cmp(&a.len()).then(a.cmp(b)));
    candidates.dedup();
    for key in candidates {
        let upper = key.to_uppercase();
        let child_schema = known.get(key).or_else(|| known.get("*")).unwrap_or(&Value::Null);
        if rest == upper {
            return Some(vec![key.clone()]);
        }
        if let Some(below) = rest.strip_prefix(&upper).and_then(|r| r.strip_prefix('_'))
            && child_schema.is_object()
            && let Some(mut path) = resolve(actual.get(key).unwrap_or(&Value::Null), child_schema, below)
        {
            path.insert(0, key.clone());
            return Some(path);
        }
    }
    None
}

/// A value read as YAML (a scalar, or a flow sequence or mapping); text if it does not parse.
fn yaml_value(raw: &str) -> Value {
    serde_saphyr::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.into()))
}

/// Sets the value at `path`, making mappings where there are none (an unset optional block).
fn set(root: &mut Value, path: &[String], new: Value) {
    let mut node = root;
    for key in path {
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
        let Value::Object(map) = node else { return };
        node = map.entry(key.clone()).or_insert(Value::Null);
    }
    *node = new;
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_resolve_without_regard_to_case_and_names_with_underscores_match_whole() {
        let schema = json!({"server": "", "rtsp": {"port": 0}, "streams": {"*": {"rtsp": {"url": ""}}}});
        let node = json!({"server": "h:1", "rtsp": {"port": 8554}, "streams": {"front_door": {}, "front": {}}});
        let r = |s| resolve(&node, &schema, s);
        assert_eq!(r("SERVER"), Some(vec!["server".to_owned()]));
        assert_eq!(r("RTSP_PORT"), Some(vec!["rtsp".to_owned(), "port".to_owned()]));
        assert_eq!(r("STREAMS_FRONT_DOOR_RTSP_URL").unwrap(), ["streams", "front_door", "rtsp", "url"]);
        assert_eq!(r("STREAMS_FRONT_RTSP_URL").unwrap(), ["streams", "front", "rtsp", "url"]);
        assert_eq!(r("STREAMS_BACK_RTSP_URL"), None, "no stream `back` in the file");
        assert_eq!(r("RTSP"), Some(vec!["rtsp".to_owned()]));
        assert_eq!(r("SERVR"), None);
    }

    #[test]
    fn values_are_yaml_and_optional_blocks_are_made() {
        assert_eq!(yaml_value("5"), json!(5));
        assert_eq!(yaml_value("true"), json!(true));
        assert_eq!(yaml_value("[-i, x.mp4]"), json!(["-i", "x.mp4"]));
        assert_eq!(yaml_value("10s"), json!("10s"));
        let mut v = json!({"a": null});
        set(&mut v, &["a".into(), "b".into()], json!(1));
        assert_eq!(v, json!({"a": {"b": 1}}));
    }
}
