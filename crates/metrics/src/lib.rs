//! Prometheus metrics for mediamesh: the text exposition format (0.0.4), written by hand from
//! counters the hub and edge already keep ([`Exposition`]), and the standard `process_*`
//! metrics of the running process, read from `/proc` ([`process`]).
//!
//! Nothing here is on a media path: a scrape builds its text from atomics when asked.

#![forbid(unsafe_code)]

pub mod process;

use std::fmt::Write as _;

/// A page of metrics in the text exposition format.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a family: its `HELP` and `TYPE` lines.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// A sample of the current family, its label values escaped.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                for c in v.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        let mut m = Exposition::default();
        m.family("x_total", "counter", "An x.");
        m.sample("x_total", &[("a", "q\"b\\c\nd")], 3.0);
        m.sample("x_total", &[], 0.5);
        assert_eq!(
            m.finish(),
            "# HELP x_total An x.\n# TYPE x_total counter\nx_total{a=\"q\\\"b\\\\c\\nd\"} 3\nx_total 0.5\n"
        );
    }
}
