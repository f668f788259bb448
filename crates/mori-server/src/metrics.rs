//! Prometheus metrics (`GET /metrics`): requests, queue depth, tokens in and
//! out, time to first token and generation speed.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use mori_engine::scheduler::Scheduler;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::worker::Stats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    pub api: String,
}

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    rejected: Family<ApiLabels, Counter>,
    prompt_tokens: Family<ApiLabels, Counter>,
    generated_tokens: Family<ApiLabels, Counter>,
    ttft: Family<ApiLabels, Histogram>,
    gen_speed: Family<ApiLabels, Histogram>,
    running: Gauge<i64, AtomicI64>,
    waiting: Gauge<i64, AtomicI64>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mori");
        let requests = Family::<RequestLabels, Counter>::default();
        let rejected = Family::<ApiLabels, Counter>::default();
        let prompt_tokens = Family::<ApiLabels, Counter>::default();
        let generated_tokens = Family::<ApiLabels, Counter>::default();
        let ttft = Family::<ApiLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        let gen_speed = Family::<ApiLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 2.0, 12))
        });
        let running = Gauge::<i64, AtomicI64>::default();
        let waiting = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "rejected_requests",
            "Generations refused because the queue was full",
            rejected.clone(),
        );
        registry.register(
            "prompt_tokens",
            "Prompt tokens processed",
            prompt_tokens.clone(),
        );
        registry.register(
            "generated_tokens",
            "Tokens generated",
            generated_tokens.clone(),
        );
        registry.register(
            "time_to_first_token_seconds",
            "From admission to the first generated token",
            ttft.clone(),
        );
        registry.register(
            "generation_tokens_per_second",
            "Generation speed of finished requests",
            gen_speed.clone(),
        );
        registry.register("slots_running", "Generations running now", running.clone());
        registry.register(
            "queue_depth",
            "Generations waiting for a slot",
            waiting.clone(),
        );
        Metrics {
            registry,
            requests,
            rejected,
            prompt_tokens,
            generated_tokens,
            ttft,
            gen_speed,
            running,
            waiting,
        }
    }

    fn api(api: &str) -> ApiLabels {
        ApiLabels {
            api: api.to_string(),
        }
    }

    pub fn request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status,
            })
            .inc();
    }

    pub fn rejected(&self, api: &str) {
        self.rejected.get_or_create(&Self::api(api)).inc();
    }

    pub fn queue_changed(&self, s: &Scheduler) {
        let (running, waiting) = s.load();
        self.running.set(running as i64);
        self.waiting.set(waiting as i64);
    }

    pub fn first_token(&self, api: &str, after: Duration) {
        self.ttft
            .get_or_create(&Self::api(api))
            .observe(after.as_secs_f64());
    }

    pub fn finished(&self, api: &str, s: &Stats) {
        let l = Self::api(api);
        self.prompt_tokens
            .get_or_create(&l)
            .inc_by(s.n_prompt as u64);
        self.generated_tokens
            .get_or_create(&l)
            .inc_by(s.n_generated as u64);
        if s.n_generated > 1 && !s.gen_time.is_zero() {
            self.gen_speed
                .get_or_create(&l)
                .observe(s.n_generated as f64 / s.gen_time.as_secs_f64());
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
