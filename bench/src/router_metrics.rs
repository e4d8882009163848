//! Where an STE request's time goes, from the router's own `/metrics`
//! read before and after each phase: the time requests spent in the
//! router's handlers, the time of the shard calls inside them, and how
//! many writes each shard Txn carried (docs/router.md names the series).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// How long one scrape may take before the phase goes without it.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// The router's cumulative counts at one scrape, summed over methods and
/// shards. Each is a float as the exposition gives it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// `ste_router_request_duration_seconds_sum`: seconds in handlers.
    request_seconds: f64,
    /// `ste_router_request_duration_seconds_count`: requests answered.
    requests: f64,
    /// `ste_router_shard_request_duration_seconds_sum`: seconds in shard
    /// Range and Txn calls.
    shard_seconds: f64,
    /// `ste_router_shard_request_duration_seconds_count`: shard calls.
    shard_calls: f64,
    /// `ste_router_shard_write_txns_total`: write Txns sent to shards.
    write_txns: f64,
    /// `ste_router_shard_writes_total`: client writes they carried.
    writes: f64,
}

/// One phase as the router saw it: means per request and per shard call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseView {
    /// Requests the router answered during the phase (a full list is one
    /// request per page).
    pub requests: f64,
    /// Mean time of a request in the router's handler.
    pub request_mean: Duration,
    /// Shard calls per request.
    pub shard_calls_per_request: f64,
    /// Mean time of one shard call, the hop to the shard included.
    pub shard_call_mean: Duration,
    /// Writes per shard Txn; `None` when the phase wrote nothing.
    pub writes_per_txn: Option<f64>,
}

impl Totals {
    /// Sums the series above out of Prometheus/OpenMetrics text; a series
    /// that is missing counts 0.
    pub fn parse(text: &str) -> Totals {
        let mut totals = Totals::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let name = series.split('{').next().unwrap_or(series);
            let slot = match name {
                "ste_router_request_duration_seconds_sum" => &mut totals.request_seconds,
                "ste_router_request_duration_seconds_count" => &mut totals.requests,
                "ste_router_shard_request_duration_seconds_sum" => &mut totals.shard_seconds,
                "ste_router_shard_request_duration_seconds_count" => &mut totals.shard_calls,
                "ste_router_shard_write_txns_total" => &mut totals.write_txns,
                "ste_router_shard_writes_total" => &mut totals.writes,
                _ => continue,
            };
            *slot += value;
        }
        totals
    }

    /// What happened between `before` and `self`; `None` if the router
    /// answered no request in between (or restarted: counts went down).
    pub fn since(&self, before: &Totals) -> Option<PhaseView> {
        let requests = self.requests - before.requests;
        if requests < 1.0 {
            return None;
        }
        let shard_calls = self.shard_calls - before.shard_calls;
        let mean = |seconds: f64, n: f64| {
            Duration::from_secs_f64(if n >= 1.0 {
                (seconds / n).max(0.0)
            } else {
                0.0
            })
        };
        let write_txns = self.write_txns - before.write_txns;
        Some(PhaseView {
            requests,
            request_mean: mean(self.request_seconds - before.request_seconds, requests),
            shard_calls_per_request: shard_calls.max(0.0) / requests,
            shard_call_mean: mean(self.shard_seconds - before.shard_seconds, shard_calls),
            writes_per_txn: (write_txns >= 1.0).then(|| (self.writes - before.writes) / write_txns),
        })
    }
}

/// Reads the router's `/metrics` at `addr`.
pub async fn scrape(addr: SocketAddr) -> anyhow::Result<Totals> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri: hyper::Uri = format!("http://{addr}/metrics").parse()?;
    let body = tokio::time::timeout(SCRAPE_TIMEOUT, async {
        let response = client.get(uri).await?;
        anyhow::ensure!(
            response.status().is_success(),
            "answered {}",
            response.status()
        );
        Ok(response.into_body().collect().await?.to_bytes())
    })
    .await
    .map_err(|_| anyhow::anyhow!("no answer within {SCRAPE_TIMEOUT:?}"))?
    .with_context(|| format!("GET http://{addr}/metrics"))?;
    Ok(Totals::parse(&String::from_utf8_lossy(&body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "\
# TYPE ste_router_request_duration_seconds histogram
ste_router_request_duration_seconds_sum{method=\"Txn.create\"} 1.0
ste_router_request_duration_seconds_count{method=\"Txn.create\"} 1000
ste_router_request_duration_seconds_bucket{le=\"0.0005\",method=\"Txn.create\"} 900
ste_router_shard_write_txns_total{member=\"a\"} 100
ste_router_shard_writes_total{member=\"a\"} 100
# EOF
";

    const AFTER: &str = "\
ste_router_request_duration_seconds_sum{method=\"Txn.create\"} 3.0
ste_router_request_duration_seconds_count{method=\"Txn.create\"} 3000
ste_router_request_duration_seconds_sum{method=\"Range.get\"} 0.5
ste_router_request_duration_seconds_count{method=\"Range.get\"} 1000
ste_router_shard_request_duration_seconds_sum{member=\"a\",method=\"Txn\"} 0.6
ste_router_shard_request_duration_seconds_count{member=\"a\",method=\"Txn\"} 400
ste_router_shard_request_duration_seconds_sum{member=\"b\",method=\"Range\"} 0.3
ste_router_shard_request_duration_seconds_count{member=\"b\",method=\"Range\"} 200
ste_router_shard_write_txns_total{member=\"a\"} 400
ste_router_shard_write_txns_total{member=\"b\"} 200
ste_router_shard_writes_total{member=\"a\"} 1600
ste_router_shard_writes_total{member=\"b\"} 500
";

    #[test]
    fn a_phase_is_the_difference_of_two_scrapes_summed_over_labels() {
        let view = Totals::parse(AFTER)
            .since(&Totals::parse(BEFORE))
            .expect("requests were answered");
        // 3000 requests: 2000 creates and 1000 gets, 2.5 s in all.
        assert_eq!(view.requests, 3000.0);
        assert_eq!(view.request_mean, Duration::from_secs_f64(2.5 / 3000.0));
        // 600 shard calls in 0.9 s.
        assert_eq!(view.shard_calls_per_request, 0.2);
        assert_eq!(
            view.shard_call_mean,
            Duration::from_millis(1) + Duration::from_micros(500)
        );
        // 2000 writes in 500 Txns.
        assert_eq!(view.writes_per_txn, Some(4.0));
    }

    #[test]
    fn no_requests_or_no_writes_say_so() {
        let same = Totals::parse(BEFORE);
        assert_eq!(same.since(&same), None);
        let reads = Totals::parse(
            "ste_router_request_duration_seconds_count{method=\"Range.get\"} 10\n\
             ste_router_request_duration_seconds_sum{method=\"Range.get\"} 0.01\n",
        );
        let view = reads.since(&Totals::default()).expect("10 requests");
        assert_eq!(view.writes_per_txn, None);
        assert_eq!(view.shard_call_mean, Duration::ZERO);
        assert_eq!(
            Totals::parse("garbage\nno value here x\n"),
            Totals::default()
        );
    }
}
