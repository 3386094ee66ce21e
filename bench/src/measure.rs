//! What the kernel knows about a process (CPU time, resident memory, the cores it may run
//! on), read from `/proc`; pinning with `taskset`; and the statistics the report uses.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The CPU time (user + system, all threads, living and exited) that process `pid` has
/// used, from `/proc/<pid>/stat`. Its resolution is one clock tick (usually 10 ms).
pub fn cpu_time(pid: u32) -> Result<Duration, String> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|error| format!("{path}: {error}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count fields
    // from the last `)`. Field 3 (state) is the first after it; utime and stime are
    // fields 14 and 15.
    let after_name = stat
        .rfind(')')
        .map(|end| &stat[end + 1..])
        .ok_or_else(|| format!("{path}: no command name"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| -> Result<u64, String> {
        fields
            .get(number - 3)
            .and_then(|value| value.parse().ok())
            .ok_or_else(|| format!("{path}: field {number} is missing"))
    };
    let ticks = field(14)? + field(15)?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64))
}

/// This process's CPU time; see [`cpu_time`].
pub fn own_cpu_time() -> Result<Duration, String> {
    cpu_time(std::process::id())
}

/// The resident set size of process `pid`, in bytes (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Result<u64, String> {
    let kib = status_field(pid, "VmRSS")?
        .split_whitespace()
        .next()
        .and_then(|kib| kib.parse::<u64>().ok())
        .ok_or_else(|| format!("/proc/{pid}/status: VmRSS is not a number"))?;
    Ok(kib * 1024)
}

/// The cores process `pid` may run on, as the kernel lists them (`0-1`, `0,2`).
pub fn allowed_cpus(pid: u32) -> Result<String, String> {
    status_field(pid, "Cpus_allowed_list")
}

/// The cores this process may run on, in order.
pub fn own_cpus() -> Vec<usize> {
    allowed_cpus(std::process::id())
        .map(|list| parse_cpu_list(&list))
        .unwrap_or_default()
}

fn status_field(pid: u32, name: &str) -> Result<String, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|error| format!("{path}: {error}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(|value| value.trim().to_owned())
        .ok_or_else(|| format!("{path}: no {name}"))
}

/// Parses a kernel CPU list such as `0-3,6`.
pub fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cpus = Vec::new();
    for part in list
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        match part.split_once('-') {
            Some((first, last)) => {
                if let (Ok(first), Ok(last)) = (first.parse::<usize>(), last.parse::<usize>()) {
                    cpus.extend(first..=last);
                }
            }
            None => cpus.extend(part.parse::<usize>().ok()),
        }
    }
    cpus
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 if that cannot be run).
fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|output| String::from_utf8(output.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// Restricts every thread of process `pid` to `core`, with `taskset`. Threads created
/// later inherit it, so call it before starting any runtime.
pub fn pin(pid: u32, core: usize) -> Result<(), String> {
    let output = Command::new("taskset")
        .args(["--all-tasks", "--pid", "--cpu-list"])
        .arg(core.to_string())
        .arg(pid.to_string())
        .output()
        .map_err(|error| format!("cannot run taskset: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "taskset failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The file that holds the nice value of this process's scheduling autogroup (its
/// session's share of the CPU against other sessions), where autogroups are enabled.
const AUTOGROUP: &str = "/proc/self/autogroup";

/// The nice value of this process's autogroup, if the kernel has autogroups.
pub fn autogroup_nice() -> Option<i32> {
    // "/autogroup-10 nice 0"
    let text = std::fs::read_to_string(AUTOGROUP).ok()?;
    text.split_whitespace().last()?.parse().ok()
}

/// Sets the nice value of this process's autogroup. With autogroups, a process's own
/// nice value only weighs against processes of its session; other sessions (a build in
/// another terminal) get an equal share unless the autogroup's value is raised too.
pub fn set_autogroup_nice(nice: i32) -> Result<(), String> {
    std::fs::write(AUTOGROUP, nice.to_string()).map_err(|error| format!("{AUTOGROUP}: {error}"))
}

/// Sets the nice value of process `pid` with `renice` (a negative one needs root). On
/// Linux this applies to its main thread and to the threads and processes it starts
/// afterwards, so call it first.
pub fn renice(pid: u32, nice: i32) -> Result<(), String> {
    let output = Command::new("renice")
        .args(["-n", &nice.to_string(), "-p", &pid.to_string()])
        .output()
        .map_err(|error| format!("cannot run renice: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "renice failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The load averages over 1, 5 and 15 minutes, as `/proc/loadavg` gives them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The `p`-th percentile (0–100) of sorted samples, by nearest rank; 0 for none.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of `values` (the mean of the middle two for an even count); NaN for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    }
}

/// What the figures were measured on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cpu_model: String,
    pub online_cpus: String,
    pub memory: String,
    pub kernel: String,
    pub rustc: String,
    pub date: String,
    /// The load averages (1, 5, 15 minutes) when the run started: other work on the
    /// machine shows here.
    pub load_average: String,
}

impl Machine {
    pub fn read() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find_map(|line| line.strip_prefix("model name"))
                    .and_then(|rest| rest.split_once(':'))
                    .map(|(_, model)| model.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let online_cpus = read_trimmed("/sys/devices/system/cpu/online");
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                let kib: u64 = info
                    .lines()
                    .find_map(|line| line.strip_prefix("MemTotal:"))?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some(format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)))
            })
            .unwrap_or_else(|| "unknown".to_owned());
        Self {
            cpu_model,
            online_cpus,
            memory,
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            rustc: command_line("rustc", &["--version"]),
            date: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            load_average: load_average(),
        }
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .and_then(|output| String::from_utf8(output.stdout).ok())
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-1"), [0, 1]);
        assert_eq!(parse_cpu_list("0,2-4,7\n"), [0, 2, 3, 4, 7]);
        assert_eq!(parse_cpu_list(""), Vec::<usize>::new());
    }

    #[test]
    fn percentiles_and_medians() {
        let samples: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50.0), 50);
        assert_eq!(percentile(&samples, 99.0), 99);
        assert_eq!(percentile(&samples, 100.0), 100);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn own_process_is_readable() {
        assert!(own_cpu_time().is_ok());
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
        assert!(!own_cpus().is_empty());
    }
}
