//! Liveness, readiness and startup probes (exec, httpGet, tcpSocket) with the
//! kubelet's timing: `initialDelaySeconds`, `periodSeconds` (10), `timeoutSeconds` (1),
//! `successThreshold` (1) and `failureThreshold` (3).

use crate::node::runtime::{ExecResult, Runtime};
use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// A probe's running tally for one container run.
#[derive(Clone, Debug)]
pub struct Tally {
    next_at: Instant,
    successes: i32,
    failures: i32,
    /// The probe's verdict once a threshold was crossed.
    pub passing: Option<bool>,
    pub last_message: String,
}

impl Tally {
    pub fn new(probe: &Probe, started: Instant) -> Tally {
        let delay = Duration::from_secs(probe.initial_delay_seconds.unwrap_or(0).max(0) as u64);
        Tally { next_at: started + delay, successes: 0, failures: 0, passing: None, last_message: String::new() }
    }

    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_at
    }

    pub fn next_at(&self) -> Instant {
        self.next_at
    }

    /// Records one result and schedules the next run; returns the verdict.
    pub fn record(&mut self, probe: &Probe, ok: bool, message: String, now: Instant) -> Option<bool> {
        self.next_at = now + Duration::from_secs(probe.period_seconds.unwrap_or(10).max(1) as u64);
        self.last_message = message;
        if ok {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= probe.success_threshold.unwrap_or(1).max(1) {
                self.passing = Some(true);
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= probe.failure_threshold.unwrap_or(3).max(1) {
                self.passing = Some(false);
            }
        }
        self.passing
    }
}

fn port_number(port: &IntOrString, container: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} out of range")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("container has no port named {name:?}")),
    }
}

/// Runs `probe` once against a container at `pod_ip`: success, and what it said.
pub async fn run<R: Runtime>(
    runtime: &R,
    container_id: &str,
    container: &Container,
    probe: &Probe,
    pod_ip: &str,
) -> (bool, String) {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(exec) = &probe.exec {
        let command = exec.command.clone().unwrap_or_default();
        return match runtime.exec(container_id, &command, timeout).await {
            ExecResult::Exited { code: 0, stdout, stderr } => (true, ExecResult::output(&stdout, &stderr)),
            ExecResult::Exited { code, stdout, stderr } => {
                let output = ExecResult::output(&stdout, &stderr);
                (false, format!("command {command:?} exited with {code}: {output}"))
            }
            ExecResult::TimedOut => (false, format!("command {command:?} timed out after {timeout:?}")),
        };
    }
    if let Some(http) = &probe.http_get {
        let port = match port_number(&http.port, container) {
            Ok(port) => port,
            Err(message) => return (false, message),
        };
        if http.scheme.as_deref() == Some("HTTPS") {
            return (false, "HTTPS probes are not supported yet".into());
        }
        let host = http.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_owned());
        let path = http.path.clone().unwrap_or_else(|| "/".into());
        let headers: String =
            http.http_headers.iter().flatten().map(|h| format!("{}: {}\r\n", h.name, h.value)).collect();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\n{headers}Connection: close\r\n\r\n"
        );
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut head = vec![0u8; 64];
            let read = stream.read(&mut head).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..read]).into_owned())
        };
        return match tokio::time::timeout(timeout, attempt).await {
            Err(_) => (false, format!("Get \"http://{host}:{port}{path}\": context deadline exceeded")),
            Ok(Err(error)) => (false, format!("Get \"http://{host}:{port}{path}\": {error}")),
            Ok(Ok(head)) => {
                let code: u16 = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
                ((200..400).contains(&code), format!("HTTP probe failed with statuscode: {code}"))
            }
        };
    }
    if let Some(tcp) = &probe.tcp_socket {
        let port = match port_number(&tcp.port, container) {
            Ok(port) => port,
            Err(message) => return (false, message),
        };
        let host = tcp.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_owned());
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), port))).await {
            Ok(Ok(_)) => (true, String::new()),
            Ok(Err(error)) => (false, format!("dial tcp {host}:{port}: {error}")),
            Err(_) => (false, format!("dial tcp {host}:{port}: i/o timeout")),
        };
    }
    (false, "probe has no handler this agent supports (exec, httpGet, tcpSocket)".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn thresholds_decide_the_verdict() {
        let probe = Probe {
            failure_threshold: Some(2),
            success_threshold: Some(1),
            period_seconds: Some(5),
            ..Default::default()
        };
        let now = Instant::now();
        let mut tally = Tally::new(&Probe { initial_delay_seconds: Some(3), ..probe.clone() }, now);
        assert!(!tally.due(now));
        assert!(tally.due(now + Duration::from_secs(3)));
        assert_eq!(tally.record(&probe, false, "no".into(), now), None, "one failure is not enough");
        assert_eq!(tally.next_at(), now + Duration::from_secs(5));
        assert_eq!(tally.record(&probe, false, "no".into(), now), Some(false));
        assert_eq!(tally.record(&probe, true, String::new(), now), Some(true));
    }
}
