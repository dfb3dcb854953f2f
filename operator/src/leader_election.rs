//! Leader election with a `coordination.k8s.io/v1` Lease, so that of several operator replicas
//! exactly one reconciles at a time.
//!
//! The algorithm is client-go's: a candidate takes the Lease when it is free or when its record
//! has not changed for a whole lease duration *as measured on the candidate's own clock* (so clock
//! skew between hosts does not matter); every write carries the `resourceVersion` it read, so of
//! two candidates racing for an expired Lease only one write succeeds. The holder renews every
//! retry period and gives up — ending the process, so no half-finished leadership lingers — when
//! it could not renew within the renew deadline.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use crate::metrics::Metrics;
use crate::{Error, Result};

/// Lease settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Name of the Lease.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it gives up leadership.
    pub renew_deadline: Duration,
    /// Interval between attempts to acquire or renew.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry period.
    pub fn new(namespace: String, name: String, identity: String) -> Self {
        LeaseConfig {
            namespace,
            name,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What a candidate does with the Lease it just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStep {
    /// No Lease exists: create it.
    Create,
    /// We hold it: renew.
    Renew,
    /// It is free or expired: take it over.
    TakeOver,
    /// Someone else holds a live Lease.
    Wait {
        /// The holder.
        holder: String,
    },
}

/// The Lease record as last seen, and when (on our clock) it last changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    record: String,
    since: Instant,
}

fn record_of(spec: &LeaseSpec) -> String {
    format!(
        "{:?}|{:?}|{:?}",
        spec.holder_identity,
        spec.renew_time.as_ref().map(|t| t.0),
        spec.lease_transitions
    )
}

/// Decides the next step from the Lease (`None`: it does not exist). Updates `observed`.
pub fn step(
    lease: Option<&LeaseSpec>,
    identity: &str,
    observed: &mut Option<Observation>,
    now: Instant,
    default_duration: Duration,
) -> LeaseStep {
    let Some(spec) = lease else {
        *observed = None;
        return LeaseStep::Create;
    };
    let record = record_of(spec);
    match observed {
        Some(o) if o.record == record => {}
        _ => *observed = Some(Observation { record, since: now }),
    }
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == identity {
        return LeaseStep::Renew;
    }
    if holder.is_empty() {
        return LeaseStep::TakeOver;
    }
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(default_duration, Duration::from_secs);
    let since = observed.as_ref().map_or(now, |o| o.since);
    if now.duration_since(since) > duration {
        LeaseStep::TakeOver
    } else {
        LeaseStep::Wait { holder }
    }
}

/// A candidate for the Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observation>,
}

impl LeaderElector {
    /// A candidate using `client`.
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    fn spec(&self, transitions: i32, acquire_time: Option<MicroTime>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(acquire_time.unwrap_or_else(|| now.clone())),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt: returns whether this candidate holds the Lease afterwards. A lost race (409)
    /// is `Ok(false)`; other API errors are errors.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool> {
        let name = &self.config.name;
        let current = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| Error::LeaderElection(format!("reading Lease {name}: {e}")))?;
        let decision = step(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.config.identity,
            &mut self.observed,
            Instant::now(),
            self.config.lease_duration,
        );
        let result = match (decision, current) {
            (LeaseStep::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(self.config.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(0, None)),
                };
                self.api
                    .create(&PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            (LeaseStep::Wait { .. }, _) | (_, None) => return Ok(false),
            (LeaseStep::Renew, Some(mut lease)) => {
                let old = lease.spec.take().unwrap_or_default();
                lease.spec = Some(self.spec(old.lease_transitions.unwrap_or(0), old.acquire_time));
                self.api
                    .replace(name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
            (LeaseStep::TakeOver, Some(mut lease)) => {
                let old = lease.spec.take().unwrap_or_default();
                lease.spec =
                    Some(self.spec(old.lease_transitions.unwrap_or(0).saturating_add(1), None));
                // NB: `lease.metadata.resourceVersion` is the one just read: if another candidate
                // wrote in between, this replace fails with 409 and we lost the race.
                self.api
                    .replace(name, &PostParams::default(), &lease)
                    .await
                    .map(|_| ())
            }
        };
        match result {
            Ok(()) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::LeaderElection(format!("writing Lease {name}: {e}"))),
        }
    }

    /// Gives the Lease up (so a standby takes over at once instead of after a lease duration).
    pub async fn release(&mut self) -> Result<()> {
        let name = &self.config.name;
        let Some(mut lease) = self
            .api
            .get_opt(name)
            .await
            .map_err(|e| Error::LeaderElection(format!("reading Lease {name}: {e}")))?
        else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(Error::LeaderElection(format!(
                "releasing Lease {name}: {e}"
            ))),
        }
    }

    /// Waits until this candidate holds the Lease.
    pub async fn acquire(&mut self) -> Result<()> {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "leader election attempt failed"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Runs `work` while holding the Lease: acquires it first, renews it in the background, and
    /// returns an error (after dropping `work`) as soon as leadership is lost. Releases the Lease
    /// when `work` ends on its own.
    pub async fn run<F>(mut self, metrics: &Metrics, work: F) -> Result<()>
    where
        F: Future<Output = Result<()>>,
    {
        self.acquire().await?;
        metrics.set_leader(true);
        tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became the leader");
        let mut work = std::pin::pin!(work);
        let mut last_renewal = Instant::now();
        let outcome = loop {
            tokio::select! {
                result = &mut work => break result,
                () = tokio::time::sleep(self.config.retry_period) => {
                    match self.try_acquire_or_renew().await {
                        Ok(true) => last_renewal = Instant::now(),
                        Ok(false) => {
                            metrics.set_leader(false);
                            return Err(Error::LeaderElection("another replica took the Lease".to_owned()));
                        }
                        Err(e) if last_renewal.elapsed() > self.config.renew_deadline => {
                            metrics.set_leader(false);
                            return Err(Error::LeaderElection(format!(
                                "could not renew the Lease within {:?}: {e}",
                                self.config.renew_deadline
                            )));
                        }
                        Err(e) => tracing::warn!(error = %e, "renewing the Lease failed; retrying"),
                    }
                }
            }
        };
        metrics.set_leader(false);
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "releasing the Lease failed");
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: Duration = Duration::from_secs(15);

    fn lease(holder: Option<&str>, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(str::to_owned),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).unwrap())),
            lease_transitions: Some(0),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn a_missing_lease_is_created_and_our_own_is_renewed() {
        let mut obs = None;
        let now = Instant::now();
        assert_eq!(step(None, "a", &mut obs, now, D), LeaseStep::Create);
        assert_eq!(
            step(Some(&lease(Some("a"), 1)), "a", &mut obs, now, D),
            LeaseStep::Renew
        );
    }

    #[test]
    fn a_free_lease_is_taken_at_once() {
        let mut obs = None;
        assert_eq!(
            step(Some(&lease(None, 1)), "a", &mut obs, Instant::now(), D),
            LeaseStep::TakeOver
        );
    }

    #[test]
    fn a_live_lease_of_another_holder_is_respected_until_it_stops_changing_for_a_duration() {
        let mut obs = None;
        let t0 = Instant::now();
        let held = lease(Some("b"), 1);
        let wait = LeaseStep::Wait { holder: "b".into() };
        assert_eq!(step(Some(&held), "a", &mut obs, t0, D), wait);
        assert_eq!(step(Some(&held), "a", &mut obs, t0 + D, D), wait);
        // The holder renews: the clock restarts from when *we* saw the change.
        let renewed = lease(Some("b"), 2);
        assert_eq!(
            step(
                Some(&renewed),
                "a",
                &mut obs,
                t0 + D + Duration::from_secs(1),
                D
            ),
            wait
        );
        assert_eq!(step(Some(&renewed), "a", &mut obs, t0 + 2 * D, D), wait);
        assert_eq!(
            step(
                Some(&renewed),
                "a",
                &mut obs,
                t0 + 2 * D + Duration::from_secs(2),
                D
            ),
            LeaseStep::TakeOver
        );
    }

    #[test]
    fn the_remote_clock_does_not_matter() {
        // A renew time far in the past (skewed holder clock) is not "expired" by itself.
        let mut obs = None;
        let held = lease(Some("b"), 0);
        assert_eq!(
            step(Some(&held), "a", &mut obs, Instant::now(), D),
            LeaseStep::Wait { holder: "b".into() }
        );
    }
}
