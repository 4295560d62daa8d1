//! The CLI's side of the control API.

use std::time::Duration;

use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::config::UplinkConfig;
use crate::control;

/// Why a request to the daemon failed. Each maps to an exit code the CLI documents.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The daemon does not answer (not running, or the control address is wrong).
    #[error("the uplink daemon is not running (nothing answers on {0}); start it with `satcast-uplink serve --config ...`")]
    NotRunning(String),
    /// The broadcast id is not known.
    #[error("{0}")]
    UnknownId(String),
    /// The daemon refused the request.
    #[error("{0}")]
    Refused(String),
    /// The daemon refused a job (`send`): its name, targets, dates, size or version.
    #[error("refused: {0}")]
    JobRefused(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// How long `send` may take to reach the daemon. The upload itself has no overall bound
/// (a large file over a slow disk takes what it takes); each read and write does.
const UPLOAD_CONNECT_MAX: Duration = Duration::from_secs(5);
/// The longest a single read or write of an upload may stall, and the longest the daemon
/// may take to answer once the file is sent (it fsyncs the file first).
const UPLOAD_STALL_MAX: Duration = Duration::from_secs(120);

/// A client for one daemon.
#[derive(Debug)]
pub struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    /// A client for the daemon `config` describes (its control address and token file).
    pub fn new(config: &UplinkConfig) -> Result<Client, ClientError> {
        let listen = config.control.listen.clone();
        let token = std::fs::read_to_string(control::token_path(&config.state_dir)).map_err(|_| ClientError::NotRunning(listen.clone()))?;
        let agent: ureq::Agent =
            ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(15))).http_status_as_error(false).build().into();
        Ok(Client { base: format!("http://{listen}"), token: token.trim().to_owned(), agent })
    }

    /// The status, the decoded body and its error message, or why there is no answer.
    fn answer(
        &self,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, serde_json::Value, String), ClientError> {
        let mut response = match result {
            Ok(response) => response,
            Err(ureq::Error::Io(_)) | Err(ureq::Error::ConnectionFailed) | Err(ureq::Error::HostNotFound) => {
                return Err(ClientError::NotRunning(self.base.trim_start_matches("http://").to_owned()));
            }
            Err(error) => return Err(ClientError::Other(error.to_string())),
        };
        let status = response.status().as_u16();
        let body: serde_json::Value = response.body_mut().read_json().map_err(|e| ClientError::Other(format!("unreadable answer: {e}")))?;
        let message = body.get("error").and_then(|e| e.as_str()).unwrap_or("").to_owned();
        Ok((status, body, message))
    }

    fn check(&self, result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<serde_json::Value, ClientError> {
        let (status, body, message) = self.answer(result)?;
        match status {
            200 => Ok(body),
            404 => Err(ClientError::UnknownId(message)),
            401 => Err(ClientError::Refused(format!("the daemon refused the token: {message}"))),
            _ => Err(ClientError::Refused(message)),
        }
    }

    /// GETs a path and decodes the answer.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let result = self.agent.get(format!("{}{path}", self.base)).header("Authorization", format!("Bearer {}", self.token)).call();
        let value = self.check(result)?;
        serde_json::from_value(value).map_err(|e| ClientError::Other(format!("unexpected answer: {e}")))
    }

    /// `send`: asks the daemon whether it would take the job (`check=1`, no body), then
    /// POSTs the file's bytes, streamed from disk, with the job in the query (each value
    /// percent-encoded); returns the daemon's answer (`{"id": ..., "version": ...}`). So a
    /// refused job costs no transfer. Any 4xx but a wrong token is [`ClientError::JobRefused`].
    pub fn post_file(&self, path: &str, query: &[(&str, String)], file: &std::fs::File) -> Result<serde_json::Value, ClientError> {
        let size = file.metadata().map_err(|e| ClientError::Other(format!("cannot read the file: {e}")))?.len();
        let pairs = || query.iter().map(|(k, v)| (*k, v.as_str()));
        let check = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .query_pairs(pairs())
            .query("check", "1")
            .query("size", size.to_string())
            .send_empty();
        self.job_answer(check)?;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_connect(Some(UPLOAD_CONNECT_MAX))
            .timeout_per_read(Some(UPLOAD_STALL_MAX))
            .timeout_per_write(Some(UPLOAD_STALL_MAX))
            .http_status_as_error(false)
            .build()
            .into();
        let result = agent
            .post(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", self.token))
            .query_pairs(pairs())
            .send(file);
        self.job_answer(result)
    }

    fn job_answer(&self, result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<serde_json::Value, ClientError> {
        let (status, body, message) = self.answer(result)?;
        match status {
            200 => Ok(body),
            401 => Err(ClientError::Refused(format!("the daemon refused the token: {message}"))),
            400..=499 => Err(ClientError::JobRefused(message)),
            _ => Err(ClientError::Refused(message)),
        }
    }

    /// POSTs a JSON body to a path.
    pub fn post(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value, ClientError> {
        let result =
            self.agent.post(format!("{}{path}", self.base)).header("Authorization", format!("Bearer {}", self.token)).send_json(body);
        self.check(result)
    }
}
