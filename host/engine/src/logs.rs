//! The log files an enStratus operator recognises, one per component, under `<state>/logs/`.
//!
//! Every line is also an event in the store, so `stratus events` and `stratus logs` agree.
//! Callers pass only non-secret text; secrets never reach this module. Each file rotates at
//! [`LOG_FILE_BYTES`] and each line is cut at [`MAX_LINE_BYTES`].

mod rotate;
pub use rotate::{LOG_FILE_BYTES, LOG_FILES_KEPT, RotatingFile};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use stratus_store::{NewEvent, Store};

/// Longest message kept in a component log line and its event: room for a plugin message at
/// its own bound (`stratus_protocol::bounds::MAX_MESSAGE_BYTES`) and the words around it.
pub const MAX_LINE_BYTES: usize = 2 * stratus_protocol::bounds::MAX_MESSAGE_BYTES;

/// The control plane's components that keep a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    ScalingWorker,
    ConfigurationWorker,
    MonitorServer,
    MonitorDeployment,
    MonitorScalingEvent,
    Dispatcher,
}

impl Component {
    pub const ALL: [Component; 6] = [
        Component::ScalingWorker,
        Component::ConfigurationWorker,
        Component::MonitorServer,
        Component::MonitorDeployment,
        Component::MonitorScalingEvent,
        Component::Dispatcher,
    ];

    /// The name used in events and by `stratus logs <name>`.
    pub fn name(self) -> &'static str {
        match self {
            Component::ScalingWorker => "scaling-worker",
            Component::ConfigurationWorker => "configuration-worker",
            Component::MonitorServer => "monitor-server",
            Component::MonitorDeployment => "monitor-deployment",
            Component::MonitorScalingEvent => "monitor-scaling-event",
            Component::Dispatcher => "dispatcher",
        }
    }

    pub fn file_name(self) -> String {
        format!("{}.log", self.name())
    }
}

/// Where a line is about.
#[derive(Debug, Clone, Default)]
pub struct Subject<'a> {
    pub deployment: Option<&'a str>,
    pub tier: Option<&'a str>,
    pub server: Option<&'a str>,
    pub service: Option<&'a str>,
}

/// Appends lines to the component logs and mirrors them as events.
#[derive(Clone)]
pub struct Logs {
    dir: PathBuf,
    store: Store,
    files: Arc<Mutex<Vec<(Component, RotatingFile)>>>,
}

impl Logs {
    pub fn open(state_dir: &Path, store: Store) -> std::io::Result<Logs> {
        let dir = state_dir.join("logs");
        std::fs::create_dir_all(&dir)?;
        let mut files = Vec::new();
        for c in Component::ALL {
            files.push((c, RotatingFile::open(&dir.join(c.file_name()))?));
        }
        Ok(Logs {
            dir,
            store,
            files: Arc::new(Mutex::new(files)),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn info(&self, c: Component, s: Subject<'_>, message: &str) {
        self.write(c, "INFO", s, message);
    }

    pub fn warn(&self, c: Component, s: Subject<'_>, message: &str) {
        self.write(c, "WARN", s, message);
    }

    pub fn error(&self, c: Component, s: Subject<'_>, message: &str) {
        self.write(c, "ERROR", s, message);
    }

    fn write(&self, c: Component, level: &str, s: Subject<'_>, message: &str) {
        let message = &continued(&stratus_protocol::bounds::cut_str(message, MAX_LINE_BYTES));
        let mut prefix = String::new();
        for (k, v) in [
            ("deployment", s.deployment),
            ("tier", s.tier),
            ("server", s.server),
            ("service", s.service),
        ] {
            if let Some(v) = v {
                prefix.push_str(&format!("{k}={v} "));
            }
        }
        let line = format!("{} {level:5} {prefix}{message}\n", timestamp());
        if let Ok(mut files) = self.files.lock()
            && let Some((_, f)) = files.iter_mut().find(|(fc, _)| *fc == c)
        {
            // A full disk must not stop a launch; the event below still records the line.
            let _ = f.write_all(line.as_bytes());
        }
        let event = NewEvent {
            deployment: s.deployment.map(str::to_string),
            component: c.name().to_string(),
            server: s.server.map(str::to_string),
            service: s.service.map(str::to_string),
            level: level.to_string(),
            message: message.to_string(),
        };
        if let Err(e) = self.store.append_event(&event) {
            tracing::warn!(error = %e, "could not record event");
        }
    }
}

/// `message` with every line after the first indented and carriage returns dropped, so that
/// no part of a message (a plugin's text in it) can pass for a line of its own in a log or in
/// `stratus events`, where every record starts with its timestamp.
fn continued(message: &str) -> String {
    if !message.contains(['\n', '\r']) {
        return message.to_string();
    }
    message.replace('\r', "").replace('\n', "\n    ")
}

/// A writer that applies [`continued`] to every record written through it, for logs whose
/// records another formatter makes (an agent's `tracing` output): each `write` is one whole
/// record ending in a newline, as `tracing-subscriber`'s formatter writes them.
pub struct ContinuedLines<W>(pub W);

impl<W: std::io::Write> std::io::Write for ContinuedLines<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if !body.iter().any(|b| *b == b'\n' || *b == b'\r') {
            return self.0.write(buf);
        }
        let text = String::from_utf8_lossy(body);
        let end = if body.len() < buf.len() { "\n" } else { "" };
        self.0
            .write_all(format!("{}{end}", continued(&text)).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// UTC timestamp with milliseconds, as in the enStratus worker logs.
pub fn timestamp() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::{ContinuedLines, continued};

    #[test]
    fn records_written_through_continued_lines_cannot_forge_a_line() {
        use std::io::Write;
        let mut out = ContinuedLines(Vec::new());
        out.write_all(b"WARN denied=stdout-file /etc/x\n2026-12-01T22:00:00Z INFO forged\r\n")
            .unwrap();
        out.write_all(b"INFO plain\n").unwrap();
        assert_eq!(
            String::from_utf8(out.0).unwrap(),
            "WARN denied=stdout-file /etc/x\n    2026-12-01T22:00:00Z INFO forged\nINFO plain\n"
        );
    }

    #[test]
    fn a_message_cannot_start_a_line_of_its_own() {
        let forged = "failed\r\n2026-12-01T00:00:00.000Z INFO  monitor-deployment prod: forged";
        let out = continued(forged);
        assert_eq!(
            out,
            "failed\n    2026-12-01T00:00:00.000Z INFO  monitor-deployment prod: forged"
        );
        assert!(out.lines().skip(1).all(|l| l.starts_with("    ")));
        assert_eq!(continued("one line"), "one line");
    }
}
