//! The services `ctl` talks to: one gRPC channel each (mutual TLS when configured), and the
//! one-line error that names the service, what failed and what to check.

use std::time::Duration;

use switchyard_proto::v1 as pb;
use tonic::transport::Channel;

/// A service `ctl` talks to, for connecting and for error lines.
pub(crate) struct Service {
    pub(crate) name: &'static str,
    pub(crate) addr: String,
    pub(crate) flag: &'static str,
    pub(crate) env: &'static str,
}

impl Service {
    pub(crate) fn channel(&self, timeout: Duration) -> Result<Channel, String> {
        switchyard_runtime::tls::endpoint(&self.addr)
            .map(|e| e.connect_timeout(timeout).timeout(timeout).connect_lazy())
            .map_err(|e| {
                format!(
                    "error: {} service at {}: {e}; check --{} / {} and the --tls-* settings",
                    self.name, self.addr, self.flag, self.env
                )
            })
    }

    /// One line: which service, what failed, what to check.
    pub(crate) fn fail(&self, what: &str, s: &tonic::Status) -> String {
        let message = s.message().replace(['\n', '\r'], " ");
        let message = if message.is_empty() {
            s.code().description().to_string()
        } else {
            message
        };
        let hint = match s.code() {
            tonic::Code::Unavailable | tonic::Code::Unknown => format!(
                "unreachable or not ready ({message}); check that it runs and that --{} / {} is its gRPC address{}",
                self.flag,
                self.env,
                if matches!(switchyard_runtime::tls::current(), Ok(Some(_))) {
                    ", and that its certificate is signed by --tls-ca"
                } else {
                    " (and, if the services use mutual TLS, set --tls-cert, --tls-key and --tls-ca)"
                }
            ),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => format!(
                "no answer in time ({message}); check its logs and load, or raise --timeout"
            ),
            tonic::Code::NotFound => format!("not found: {message}"),
            tonic::Code::InvalidArgument
            | tonic::Code::FailedPrecondition
            | tonic::Code::OutOfRange
            | tonic::Code::AlreadyExists => format!("refused: {message}"),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
                format!("not allowed: {message}; check --key / SWITCHYARD_API_KEY")
            }
            tonic::Code::Unimplemented => format!(
                "not supported there ({message}); check that --{} points at the {} service",
                self.flag, self.name
            ),
            code => format!("{code:?}: {message}"),
        };
        format!(
            "error: {} service at {}: {what} failed: {hint}",
            self.name, self.addr
        )
    }
}

pub(crate) struct Ctx {
    pub(crate) policy: Service,
    pub(crate) billing: Service,
    pub(crate) prober: Service,
    pub(crate) router: Service,
    pub(crate) timeout: Duration,
    pub(crate) actor: String,
}

impl Ctx {
    pub(crate) fn policy(&self) -> Result<pb::policy_client::PolicyClient<Channel>, String> {
        Ok(pb::policy_client::PolicyClient::new(
            self.policy.channel(self.timeout)?,
        ))
    }

    pub(crate) fn billing(&self) -> Result<pb::billing_client::BillingClient<Channel>, String> {
        Ok(pb::billing_client::BillingClient::new(
            self.billing.channel(self.timeout)?,
        ))
    }

    pub(crate) fn health(&self) -> Result<pb::health_client::HealthClient<Channel>, String> {
        Ok(pb::health_client::HealthClient::new(
            self.prober.channel(self.timeout)?,
        ))
    }

    pub(crate) async fn status(&self) -> Result<pb::PolicyStatus, String> {
        self.policy()?
            .get_status(pb::GetStatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.policy.fail("reading the policy status", &s))
    }

    /// `org`, or every org of the policy.
    pub(crate) async fn orgs(&self, org: Option<String>) -> Result<Vec<String>, String> {
        match org {
            Some(o) => Ok(vec![o]),
            None => Ok(self.status().await?.org_ids),
        }
    }
}
