//! The API calls, blocking, each failure named with its fix: an unreachable coordinator names
//! COORDINATOR_URL, a 401 names COORDINATOR_TOKEN, other errors carry the API's own message
//! (which names the field and the fix).

use anyhow::Context;
use serde_json::Value;
use std::io::BufRead;
use std::process::ExitCode;
use std::time::Duration;

/// The coordinator's API at one URL, with one token.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// A client of `base` (e.g. `http://127.0.0.1:18080`).
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(5)))
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent,
        }
    }

    /// Uploads a module; its metadata (`cid_v1`, exports...).
    pub fn upload(&self, bytes: Vec<u8>, wat: bool) -> anyhow::Result<Value> {
        let kind = if wat { "text/wat" } else { "application/wasm" };
        let req = self
            .auth(self.agent.post(self.url("/v1/modules")))
            .header("Content-Type", kind);
        self.answer(req.send(bytes), "uploading the module")
    }

    /// Submits a task; the task as accepted.
    pub fn submit(&self, body: &Value) -> anyhow::Result<Value> {
        let req = self.auth(self.agent.post(self.url("/v1/tasks")));
        let req = req.header("Content-Type", "application/json");
        self.answer(req.send(body.to_string()), "submitting the task")
    }

    /// A task, held up to `wait` seconds until it ends.
    pub fn task(&self, id: &str, wait: u64) -> anyhow::Result<Value> {
        let path = format!("/v1/tasks/{}?wait={wait}", encode(id));
        let req = self.auth(self.agent.get(self.url(&path)));
        self.answer(req.call(), &format!("reading task \"{id}\""))
    }

    /// Up to `limit` tasks, optionally in one state, following the pages.
    pub fn list(&self, state: Option<&str>, limit: usize) -> anyhow::Result<Vec<Value>> {
        let mut tasks = Vec::new();
        let mut after: Option<String> = None;
        while tasks.len() < limit {
            let mut path = format!("/v1/tasks?limit={}", (limit - tasks.len()).min(1000));
            if let Some(state) = state {
                path.push_str(&format!("&state={}", encode(state)));
            }
            if let Some(after) = &after {
                path.push_str(&format!("&after={}", encode(after)));
            }
            let page = self.answer(
                self.auth(self.agent.get(self.url(&path))).call(),
                "listing tasks",
            )?;
            tasks.extend(page["tasks"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => break,
            }
        }
        Ok(tasks)
    }

    /// Cancels a task; the task after it.
    pub fn cancel(&self, id: &str) -> anyhow::Result<Value> {
        let path = format!("/v1/tasks/{}/cancel", encode(id));
        let req = self.auth(self.agent.post(self.url(&path)));
        let req = req.header("Content-Type", "application/json");
        self.answer(req.send(""), &format!("cancelling task \"{id}\""))
    }

    /// Follows the event stream, calling `each` with every event's data, until it ends.
    pub fn events(
        &self,
        state: Option<&str>,
        mut each: impl FnMut(&Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<ExitCode> {
        let path = match state {
            Some(state) => format!("/v1/events?state={}", encode(state)),
            None => "/v1/events".to_owned(),
        };
        let resp = self.auth(self.agent.get(self.url(&path))).call();
        let resp = self.reached(resp)?;
        if resp.status().as_u16() != 200 {
            let status = resp.status().as_u16();
            let mut resp = resp;
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            return Err(api_error(status, &text, &self.base)).context("following the events");
        }
        let reader = std::io::BufReader::new(resp.into_body().into_reader());
        for line in reader.lines() {
            let line = line.context("reading the event stream")?;
            if let Some(data) = line.strip_prefix("data:") {
                let event: Value = serde_json::from_str(data.trim()).unwrap_or(Value::Null);
                each(&event)?;
            }
        }
        Ok(ExitCode::SUCCESS)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn auth<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => req.header("Authorization", format!("Bearer {token}")),
            None => req,
        }
    }

    /// The response, or an error naming COORDINATOR_URL when the coordinator was not reached.
    fn reached(
        &self,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> anyhow::Result<ureq::http::Response<ureq::Body>> {
        sent.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the coordinator at {} ({e}); is it running? point COORDINATOR_URL \
                 (or --url) at its API",
                self.base
            )
        })
    }

    /// The JSON body of a 2xx answer, or the error it is.
    fn answer(
        &self,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
        what: &str,
    ) -> anyhow::Result<Value> {
        let mut resp = self.reached(sent).context(what.to_owned())?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .context("reading the answer")?;
        if !(200..300).contains(&status) {
            return Err(api_error(status, &text, &self.base)).context(what.to_owned());
        }
        serde_json::from_str(&text).with_context(|| format!("{what}: the answer is not JSON"))
    }
}

/// An API error as the user should read it.
fn api_error(status: u16, text: &str, base: &str) -> anyhow::Error {
    let message = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.trim().to_owned());
    match status {
        401 => anyhow::anyhow!(
            "{base} refused the token (401); set COORDINATOR_TOKEN (or --token) to a token of \
             COORDINATOR_TOKENS_FILE or to COORDINATOR_API_TOKEN"
        ),
        404 if message.is_empty() => anyhow::anyhow!(
            "{base} has no such route (404); is COORDINATOR_URL the coordinator's API?"
        ),
        _ => anyhow::anyhow!("{message} ({status})"),
    }
}

/// `text` percent-encoded for a path segment or query value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b',') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
