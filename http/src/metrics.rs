//! Registering and encoding Prometheus families (the `prometheus` crate,
//! text format 0.0.4, what `promtool check metrics` reads), shared by the
//! broker's, the worker's and the relay's `/metrics` so that each only
//! names its families.

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Gauge, IntCounter, IntGauge, Opts, Registry, TextEncoder};

/// One registry and the helpers that fill it. A family's name, help text
/// and labels are the caller's; the registrar only registers them. Every
/// name is a constant of the caller, so a bad or repeated one is a bug
/// caught by its first test: it panics rather than returning an error.
#[derive(Clone, Default)]
pub struct Registrar {
    registry: Registry,
}

impl std::fmt::Debug for Registrar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registrar").finish_non_exhaustive()
    }
}

impl Registrar {
    pub fn new() -> Registrar {
        Registrar::default()
    }

    /// Registers `collector` and hands it back (a clone shares its values).
    pub fn add<C: Collector + Clone + 'static>(&self, collector: C) -> C {
        self.registry.register(Box::new(collector.clone())).expect("family names are unique");
        collector
    }

    /// An integer counter family of one series.
    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("a valid counter"))
    }

    /// An integer gauge family of one series.
    pub fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("a valid gauge"))
    }

    /// A floating-point gauge family of one series (seconds, ages).
    pub fn float_gauge(&self, name: &str, help: &str) -> Gauge {
        self.add(Gauge::new(name, help).expect("a valid gauge"))
    }

    /// A `*_build_info` family: one series of value 1 whose constant labels
    /// (in `opts`) say what runs.
    pub fn build_info(&self, opts: Opts) {
        self.add(IntGauge::with_opts(opts).expect("a valid gauge")).set(1);
    }

    /// The `process_*` families of this process (CPU, memory, open files),
    /// where the `prometheus` crate has them (Linux).
    pub fn process(&self) {
        #[cfg(target_os = "linux")]
        self.registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("family names are unique");
    }

    /// Every family registered, sorted by name.
    pub fn gather(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }

    /// Text format 0.0.4 of every family registered.
    pub fn encode(&self) -> String {
        encode(&self.gather())
    }
}

/// Text format 0.0.4 of `families`.
pub fn encode(families: &[MetricFamily]) -> String {
    let mut buffer = Vec::new();
    // Encoding to a Vec fails only on a malformed family, which the
    // registry's checks rule out.
    TextEncoder::new().encode(families, &mut buffer).expect("families encode");
    String::from_utf8(buffer).expect("the text format is UTF-8")
}

/// Raises `counter` to `total` (the loops keep totals; Prometheus counters
/// only go up by increments).
pub fn advance(counter: &IntCounter, total: u64) {
    let delta = total.saturating_sub(counter.get());
    if delta > 0 {
        counter.inc_by(delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_what_was_registered_sorted_by_name() {
        let registrar = Registrar::new();
        let done = registrar.counter("b_done_total", "Done.");
        registrar.gauge("a_running", "Running.").set(2);
        registrar.build_info(Opts::new("c_build_info", "Build.").const_label("version", "1"));
        advance(&done, 5);
        advance(&done, 3);
        let text = registrar.encode();
        assert_eq!(
            text,
            "# HELP a_running Running.\n# TYPE a_running gauge\na_running 2\n\
             # HELP b_done_total Done.\n# TYPE b_done_total counter\nb_done_total 5\n\
             # HELP c_build_info Build.\n# TYPE c_build_info gauge\nc_build_info{version=\"1\"} 1\n"
        );
    }

    #[test]
    #[should_panic(expected = "family names are unique")]
    fn a_name_registered_twice_is_a_bug() {
        let registrar = Registrar::new();
        registrar.counter("twice_total", "Once.");
        registrar.counter("twice_total", "Twice.");
    }
}
