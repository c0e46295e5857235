//! The simulator's control API as tests use it: change a provider's faults, read what it received.

use serde_json::Value;

use crate::{Result, TestkitError};

/// A client of one simulator's control API.
#[derive(Debug, Clone)]
pub struct SimControl {
    url: String,
    http: reqwest::Client,
}

fn http_error(what: String) -> impl FnOnce(reqwest::Error) -> TestkitError {
    move |e| TestkitError::Http {
        what,
        detail: e.to_string(),
    }
}

impl SimControl {
    /// A client of the control API at `control_url` (`http://host:port`).
    pub fn new(control_url: impl Into<String>) -> Self {
        SimControl {
            url: control_url.into(),
            http: reqwest::Client::new(),
        }
    }

    /// Replaces provider `id`'s fault profile (`{}` heals it).
    pub async fn set_faults(&self, id: &str, faults: &Value) -> Result<()> {
        let what = format!("PUT faults of simulated provider `{id}`");
        let resp = self
            .http
            .put(format!("{}/providers/{id}/faults", self.url))
            .json(faults)
            .send()
            .await
            .map_err(http_error(what.clone()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(TestkitError::Http {
            what,
            detail: format!("{status}: {body}"),
        })
    }

    /// Heals provider `id`: no faults at all.
    pub async fn heal(&self, id: &str) -> Result<()> {
        self.set_faults(id, &Value::Object(Default::default()))
            .await
    }

    /// Provider `id`'s counters, as the control API reports them.
    pub async fn stats(&self, id: &str) -> Result<Value> {
        let what = format!("GET stats of simulated provider `{id}`");
        let resp = self
            .http
            .get(format!("{}/providers/{id}/stats", self.url))
            .send()
            .await
            .map_err(http_error(what.clone()))?;
        if !resp.status().is_success() {
            return Err(TestkitError::Http {
                what,
                detail: resp.status().to_string(),
            });
        }
        resp.json().await.map_err(http_error(what))
    }

    /// How many requests providers `ids` received in total.
    pub async fn requests(&self, ids: &[&str]) -> Result<u64> {
        let mut n = 0;
        for id in ids {
            n += self.stats(id).await?["requests"].as_u64().unwrap_or(0);
        }
        Ok(n)
    }

    /// Zeroes every counter (faults stay as they are).
    pub async fn reset_counters(&self) -> Result<()> {
        let what = "POST reset to the simulator".to_string();
        let resp = self
            .http
            .post(format!("{}/reset", self.url))
            .send()
            .await
            .map_err(http_error(what.clone()))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(TestkitError::Http {
                what,
                detail: resp.status().to_string(),
            })
        }
    }
}
