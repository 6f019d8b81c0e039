//! Tables as Markdown (as readable on a terminal as in `BENCHMARKS.md`) and a description of
//! the machine the figures came from.

use std::process::Command;

pub struct Table {
    pub title: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// How many leading columns hold text (aligned left); the others hold figures.
    pub text_columns: usize,
}

impl Table {
    pub fn new(title: &str, headers: &[&str]) -> Self {
        let headers = headers.iter().map(|h| (*h).to_owned()).collect();
        Self { title: title.to_owned(), headers, rows: Vec::new(), text_columns: 1 }
    }

    pub fn with_text_columns(mut self, n: usize) -> Self {
        self.text_columns = n;
        self
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// A padded Markdown table under a bold title; figures align right.
    pub fn markdown(&self) -> String {
        let columns = self.headers.len();
        let width = |i: usize| {
            self.rows.iter().map(|r| r.get(i).map_or(0, |c| c.chars().count())).chain([self.headers[i].len(), 3]).max()
        };
        let widths: Vec<usize> = (0..columns).map(|i| width(i).unwrap_or(3)).collect();
        let line = |cells: &[String]| {
            let padded: Vec<String> = (0..columns)
                .map(|i| {
                    let cell = cells.get(i).map_or("", String::as_str);
                    if i < self.text_columns {
                        format!("{cell:<w$}", w = widths[i])
                    } else {
                        format!("{cell:>w$}", w = widths[i])
                    }
                })
                .collect();
            format!("| {} |\n", padded.join(" | "))
        };
        let rule: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(i, w)| if i < self.text_columns { "-".repeat(w + 2) } else { format!("{}:", "-".repeat(w + 1)) })
            .collect();
        let mut out = format!("**{}**\n\n", self.title);
        out.push_str(&line(&self.headers));
        out.push_str(&format!("|{}|\n", rule.join("|")));
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// `PASS` when `value` is within `limit`, else `OVER`.
pub fn mark(value: f64, limit: f64) -> String {
    if value <= limit { "PASS" } else { "OVER" }.to_owned()
}

/// What the figures were measured on: CPU, cores, memory, OS, toolchain and emulator versions.
pub fn machine() -> Vec<(&'static str, String)> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "unknown".into());
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or_else(|| "unknown".into(), |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0));
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map_or_else(|| "unknown".into(), |v| v.trim_matches('"').to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let python = crate::venv_bin("python");
    vec![
        ("CPU", format!("{cpu} ({} architecture)", std::env::consts::ARCH)),
        ("cores", cores.to_string()),
        ("memory", memory),
        ("OS", format!("{os}, kernel {}", read("/proc/sys/kernel/osrelease").trim())),
        ("rustc", output(Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into())).arg("-V"))),
        ("cargo lambda", output(Command::new(crate::venv_bin("cargo-lambda")).args(["lambda", "--version"]))),
        ("moto", output(Command::new(python).args(["-c", "import moto; print(moto.__version__)"]))),
    ]
}

fn output(command: &mut Command) -> String {
    match command.output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        _ => "unknown".into(),
    }
}
