//! The top level of a configuration file: our two blocks on their own, or wrapped in a KubeEdge
//! `cloudcore.yaml` / `edgecore.yaml` (`apiVersion`, `kind`, `modules:` around them).
//!
//! The document is read with a hand-written visitor rather than `#[serde(flatten)]`: flatten
//! buffers a whole map before deserializing it, which would lose the line of every error inside
//! our blocks.

use std::fmt;

use mediamesh_edge::EdgeConfig;
use mediamesh_hub::HubConfig;
use serde::de::{Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Our blocks.
const HUB: &str = "cloudDataStream";
const EDGE: &str = "edgeDataStream";
/// Top-level keys of KubeEdge's CloudCore and EdgeCore configurations besides `modules`,
/// accepted and ignored.
const KUBEEDGE_TOP: [&str; 6] = ["apiVersion", "kind", "kubeAPIConfig", "commonConfig", "featureGates", "database"];
/// Every key accepted at the top level, for "unknown key" errors.
const TOP: [&str; 9] =
    [HUB, EDGE, "modules", "apiVersion", "kind", "kubeAPIConfig", "commonConfig", "featureGates", "database"];

/// A parsed configuration file.
#[derive(Debug, Default)]
pub struct ConfigFile {
    /// The hub's block.
    pub cloud: Option<HubConfig>,
    /// The edge's block.
    pub edge: Option<EdgeConfig>,
    /// Set when the blocks came from a KubeEdge file's `modules`.
    pub kubeedge: Option<KubeEdgeFile>,
}

/// What a KubeEdge file held besides our blocks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KubeEdgeFile {
    /// Its `kind` (`CloudCore`, `EdgeCore`), if given.
    pub kind: Option<String>,
    /// The other modules, ignored.
    pub other_modules: Vec<String>,
}

impl ConfigFile {
    /// Parses YAML text.
    pub fn parse(text: &str) -> Result<Self, serde_saphyr::Error> {
        serde_saphyr::from_str(text)
    }
}

impl<'de> Deserialize<'de> for ConfigFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FileVisitor)
    }
}

struct FileVisitor;

impl<'de> Visitor<'de> for FileVisitor {
    type Value = ConfigFile;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a mapping with {HUB} and/or {EDGE} (or a KubeEdge file with them under modules)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ConfigFile, A::Error> {
        let mut file = ConfigFile::default();
        let mut wrapper: Option<KubeEdgeFile> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                HUB => set_once(&mut file.cloud, map.next_value()?, HUB)?,
                EDGE => set_once(&mut file.edge, map.next_value()?, EDGE)?,
                "modules" => {
                    let modules: Modules = map.next_value()?;
                    set_once(&mut file.cloud, modules.cloud, HUB)?;
                    set_once(&mut file.edge, modules.edge, EDGE)?;
                    wrapper.get_or_insert_default().other_modules = modules.other;
                }
                "kind" => wrapper.get_or_insert_default().kind = Some(map.next_value()?),
                k if KUBEEDGE_TOP.contains(&k) => {
                    wrapper.get_or_insert_default();
                    map.next_value::<IgnoredAny>()?;
                }
                other => return Err(A::Error::unknown_field(other, &TOP)),
            }
        }
        file.kubeedge = wrapper;
        Ok(file)
    }
}

fn set_once<T, E: serde::de::Error>(slot: &mut Option<T>, value: Option<T>, name: &'static str) -> Result<(), E> {
    match (slot.is_some(), value) {
        (true, Some(_)) => Err(E::duplicate_field(name)),
        (_, Some(v)) => {
            *slot = Some(v);
            Ok(())
        }
        (_, None) => Ok(()),
    }
}

/// KubeEdge's `modules`: ours are read, every other module is skipped.
struct Modules {
    cloud: Option<HubConfig>,
    edge: Option<EdgeConfig>,
    other: Vec<String>,
}

impl<'de> Deserialize<'de> for Modules {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Modules;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("KubeEdge's modules: a mapping of module names")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Modules, A::Error> {
                let mut m = Modules { cloud: None, edge: None, other: Vec::new() };
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        HUB => set_once(&mut m.cloud, map.next_value()?, HUB)?,
                        EDGE => set_once(&mut m.edge, map.next_value()?, EDGE)?,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            m.other.push(key);
                        }
                    }
                }
                Ok(m)
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TLS: &str = "tlsTunnelCAFile: ca.pem\n    tlsTunnelCertFile: hub.pem\n    tlsTunnelPrivateKeyFile: hub.key";

    #[test]
    fn a_kubeedge_cloudcore_file_yields_our_block_and_names_the_rest() {
        let text = format!(
            "apiVersion: cloudcore.config.kubeedge.io/v1alpha2\nkind: CloudCore\nkubeAPIConfig:\n  kubeConfig: \"\"\n\
             modules:\n  cloudHub:\n    advertiseAddress: [10.0.0.1]\n    nodeLimit: 1000\n  cloudStream:\n    enable: false\n\
             \x20 cloudDataStream:\n    enable: true\n    linger: 5s\n    {TLS}\n  router:\n    enable: false\n"
        );
        let file = ConfigFile::parse(&text).unwrap();
        let hub = file.cloud.unwrap();
        assert_eq!(hub.linger.get().as_secs(), 5);
        assert!(file.edge.is_none());
        let k = file.kubeedge.unwrap();
        assert_eq!(k.kind.as_deref(), Some("CloudCore"));
        assert_eq!(k.other_modules, ["cloudHub", "cloudStream", "router"]);
    }

    #[test]
    fn the_bare_form_has_no_wrapper_and_unknown_top_keys_are_errors() {
        let text = format!("cloudDataStream:\n    {TLS}\n");
        let file = ConfigFile::parse(&text).unwrap();
        assert!(file.cloud.is_some() && file.kubeedge.is_none());
        let e = ConfigFile::parse("cloudDataStreams: {}\n").unwrap_err();
        assert_eq!(e.location().map(|l| l.line()), Some(1));
    }

    #[test]
    fn a_block_given_twice_is_an_error() {
        let text = format!("cloudDataStream:\n    {TLS}\nmodules:\n  cloudDataStream:\n    {TLS}\n");
        assert!(ConfigFile::parse(&text).is_err());
    }
}
