//! `GET /metrics`: the deployment in Prometheus' terms (OpenMetrics text),
//! made at each scrape from what `status`, `sites` and the jobs say; no
//! counter is kept here, so a scrape changes nothing and a restarted
//! daemon reads on from the splitters' and the state's own counts.
//!
//! ```text
//! standby_rpo_seconds{machine,disk}                    gauge
//! standby_replication_lag_bytes{machine,disk}          gauge
//! standby_replicated_bytes_total{machine,disk}         counter (since the splitter started)
//! standby_vault_errors_total{machine,disk}             counter (since the splitter started)
//! standby_splitter_write_latency_seconds{machine,disk} histogram
//! standby_site_reachable{site}                         gauge, 1 or 0
//! standby_machine_state{machine,state}                 gauge, 1 for the machine's state
//! standby_machine_health{machine,health}               gauge, 1 for the machine's health
//! standby_machine_rpo_threshold_seconds{machine}       gauge
//! standby_jobs_total{kind,result}                      counter
//! ```

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use standby_api::{LatencyHistogram, SiteList, StatusList};

use super::Daemon;
use crate::error::ControlError;

/// The content type of the answer.
pub(super) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DiskLabels {
    machine: String,
    disk: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabels {
    site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MachineLabels {
    machine: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    machine: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealthLabels {
    machine: String,
    health: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    result: String,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

impl Daemon {
    /// The metrics text, now.
    pub(super) fn metrics(&self) -> Result<String, ControlError> {
        let board = self.statuses()?;
        let status = &board.list;
        let sites = self.sites()?;
        let jobs = self.deployment()?.state.job_counts()?;
        render(status, &sites, &jobs)
    }
}

/// The OpenMetrics text of `status`, `sites` and `jobs` (counts by kind and
/// state).
fn render(status: &StatusList, sites: &SiteList, jobs: &[(String, String, u64)]) -> Result<String, ControlError> {
    let mut registry = Registry::default();
    let rpo = Family::<DiskLabels, FloatGauge>::default();
    let lag = Family::<DiskLabels, Gauge>::default();
    let replicated = Family::<DiskLabels, Counter>::default();
    let vault_errors = Family::<DiskLabels, Counter>::default();
    let mut latency = Histograms::default();
    let reachable = Family::<SiteLabels, Gauge>::default();
    let state = Family::<StateLabels, Gauge>::default();
    let health = Family::<HealthLabels, Gauge>::default();
    let threshold = Family::<MachineLabels, Gauge>::default();
    let job_counts = Family::<JobLabels, Counter>::default();

    for machine in &status.machines {
        let name = machine.name.clone();
        state.get_or_create(&StateLabels { machine: name.clone(), state: machine.state.name().into() }).set(1);
        if let Some(level) = machine.health {
            health.get_or_create(&HealthLabels { machine: name.clone(), health: level.name().into() }).set(1);
        }
        if let Some(seconds) = machine.rpo_threshold_seconds {
            threshold.get_or_create(&MachineLabels { machine: name.clone() }).set(seconds as i64);
        }
        for disk in machine.disks.iter().flatten() {
            let labels = DiskLabels { machine: name.clone(), disk: disk.disk.clone() };
            if let Some(seconds) = disk.rpo_seconds {
                rpo.get_or_create(&labels).set(seconds);
            }
            if let Some(splitter) = &disk.splitter {
                lag.get_or_create(&labels).set(splitter.lag_bytes as i64);
                replicated.get_or_create(&labels).inc_by(splitter.bytes_shipped);
                vault_errors.get_or_create(&labels).inc_by(splitter.vault_errors);
                latency.0.push((labels, splitter.write_latency.clone()));
            }
        }
    }
    for site in &sites.sites {
        reachable.get_or_create(&SiteLabels { site: site.site.name().into() }).set(i64::from(site.reachable));
    }
    for (kind, result, count) in jobs {
        job_counts.get_or_create(&JobLabels { kind: kind.clone(), result: result.clone() }).inc_by(*count);
    }

    registry.register("standby_rpo_seconds", "Each replicated disk's recovery point objective now", rpo);
    registry.register("standby_replication_lag_bytes", "Write data not yet in the vault", lag);
    registry.register("standby_replicated_bytes", "Bytes the disk's splitter stored in the vault", replicated);
    registry.register("standby_vault_errors", "Failed attempts to open the vault or store into it", vault_errors);
    registry.register(
        "standby_splitter_write_latency_seconds",
        "How long the guest's writes took at the splitter",
        latency,
    );
    registry.register("standby_site_reachable", "Whether the site's host answers (1) or not (0)", reachable);
    registry.register("standby_machine_state", "The machine's lifecycle state (1 for the one it is in)", state);
    registry.register("standby_machine_health", "The machine's replication health (1 for its level)", health);
    registry.register("standby_machine_rpo_threshold_seconds", "The policy's RPO threshold", threshold);
    registry.register("standby_jobs", "Jobs by kind and result (running, succeeded, failed, …)", job_counts);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .map_err(|_| ControlError::Failed("the metrics could not be written".into()))?;
    Ok(text)
}

/// The splitters' write latency histograms, as they report them.
#[derive(Debug, Default)]
struct Histograms(Vec<(DiskLabels, LatencyHistogram)>);

impl EncodeMetric for Histograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (labels, histogram) in &self.0 {
            let bounds = histogram.bounds_seconds.iter().copied().chain([f64::INFINITY]);
            let buckets: Vec<(f64, u64)> = bounds.zip(histogram.counts.iter().copied()).collect();
            encoder.encode_family(labels)?.encode_histogram::<DiskLabels>(
                histogram.sum_seconds,
                histogram.count,
                &buckets,
                None,
            )?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use standby_api::{DiskStatus, HealthLevel, MachineStatus, SiteView, SplitterStatus};
    use standby_lifecycle::{Site, State};

    use super::*;

    #[test]
    fn every_family_is_named_with_its_unit_and_counters_end_in_total() {
        let splitter = SplitterStatus {
            lag_bytes: 4096,
            bytes_shipped: 1 << 20,
            vault_errors: 2,
            write_latency: LatencyHistogram {
                bounds_seconds: vec![0.001, 0.01],
                counts: vec![5, 3, 1],
                sum_seconds: 0.5,
                count: 9,
            },
            ..SplitterStatus::default()
        };
        let disk = DiskStatus {
            disk: "web.disk0".into(),
            rpo_seconds: Some(2.5),
            splitter: Some(splitter),
            latest: None,
            latest_processed: None,
            latest_app_consistent: None,
        };
        let machine = MachineStatus {
            health: Some(HealthLevel::Warning),
            replicates_to: Some(Site::Recovery),
            rpo_seconds: Some(2.5),
            rpo_threshold_seconds: Some(900),
            disks: Some(vec![disk]),
            ..MachineStatus::recorded("web", State::Protected, Site::Primary, true, Some("default".into()))
        };
        let site = SiteView {
            site: Site::Recovery,
            address: None,
            reachable: false,
            since: String::new(),
            vault: String::new(),
            replicating: 1,
            worst_rpo_seconds: None,
        };
        let jobs = [("protect".to_string(), "succeeded".to_string(), 3)];
        let text =
            render(&StatusList { machines: vec![machine], plans: Vec::new() }, &SiteList { sites: vec![site] }, &jobs)
                .unwrap();
        for line in [
            r#"standby_rpo_seconds{machine="web",disk="web.disk0"} 2.5"#,
            r#"standby_replication_lag_bytes{machine="web",disk="web.disk0"} 4096"#,
            r#"standby_replicated_bytes_total{machine="web",disk="web.disk0"} 1048576"#,
            r#"standby_vault_errors_total{machine="web",disk="web.disk0"} 2"#,
            r#"standby_splitter_write_latency_seconds_bucket{le="0.01",machine="web",disk="web.disk0"} 8"#,
            r#"standby_splitter_write_latency_seconds_bucket{le="+Inf",machine="web",disk="web.disk0"} 9"#,
            r#"standby_splitter_write_latency_seconds_count{machine="web",disk="web.disk0"} 9"#,
            r#"standby_site_reachable{site="recovery"} 0"#,
            r#"standby_machine_state{machine="web",state="protected"} 1"#,
            r#"standby_machine_health{machine="web",health="warning"} 1"#,
            r#"standby_jobs_total{kind="protect",result="succeeded"} 3"#,
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }
}
