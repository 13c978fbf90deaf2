//! Human units for flags: sizes (`64KiB`, `16MiB`, `1000`), durations
//! (`500ms`, `2s`, `1.5`, where a bare number is seconds), and listen
//! addresses (`127.0.0.1:8088`).

use std::time::Duration;

/// Checks an address to listen on: `HOST:PORT`, an IPv6 host in brackets.
/// A bare port (`8088`) is the likeliest slip, and is told how to write it.
pub fn parse_listen_addr(s: &str) -> Result<String, String> {
    let t = s.trim();
    let bad = || {
        format!(
            "expected HOST:PORT (127.0.0.1:{0} for this machine only, 0.0.0.0:{0} for every \
             interface; port 0 picks one)",
            if t.parse::<u16>().is_ok() { t } else { "8088" }
        )
    };
    let (host, port) = t.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(t.to_owned())
}

/// Parses a byte size: a number with an optional unit B, KB/KiB, MB/MiB, GB/GiB
/// (KB and KiB both mean 1024: sizes here are buffer sizes).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '_' || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num = num.replace('_', "");
    let not_a_size = || format!("'{s}' is not a size (examples: 1024, 64KiB, 1.5MiB)");
    let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit '{other}' in '{s}' (use B, KiB, MiB or GiB)"
            ))
        }
    };
    if num.contains('.') {
        // 1.5MiB is a size people write; 1.5 bytes is not one.
        let n: f64 = num.parse().map_err(|_| not_a_size())?;
        let bytes = n * mult as f64;
        if bytes.fract() != 0.0 {
            return Err(format!("'{s}' is not a whole number of bytes"));
        }
        if bytes >= usize::MAX as f64 {
            return Err(format!("'{s}' is too large"));
        }
        return Ok(bytes as usize);
    }
    let num: usize = num.parse().map_err(|_| not_a_size())?;
    num.checked_mul(mult)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Parses a duration: a bare number of seconds (`0.5`) or with units (`500ms`,
/// `2s`, `1m 30s`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let d = if let Ok(secs) = t.parse::<f64>() {
        if !(secs.is_finite() && secs >= 0.0) {
            return Err(format!(
                "'{s}' is not a duration: must be zero or more seconds"
            ));
        }
        if secs > MAX_DURATION.as_secs_f64() {
            return Err(too_long(s));
        }
        Duration::from_secs_f64(secs)
    } else {
        humantime::parse_duration(t)
            .map_err(|e| format!("'{s}' is not a duration ({e}; examples: 0.5, 500ms, 2s)"))?
    };
    // A deadline this far away would overflow the clock it is added to.
    if d > MAX_DURATION {
        return Err(too_long(s));
    }
    Ok(d)
}

/// The longest duration any flag takes: ten years.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

fn too_long(s: &str) -> String {
    format!("'{s}' is too long a duration (at most ten years)")
}

#[cfg(test)]
mod tests {
    #[test]
    fn listen_addresses_need_a_host_and_a_port() {
        assert!(parse_listen_addr("127.0.0.1:8088").is_ok());
        assert!(parse_listen_addr("[::1]:0").is_ok());
        assert!(parse_listen_addr("localhost:80").is_ok());
        assert!(parse_listen_addr("8088")
            .unwrap_err()
            .contains("127.0.0.1:8088"));
        assert!(parse_listen_addr(":8088").is_err());
        assert!(parse_listen_addr("host:http").is_err());
    }

    use super::*;

    #[test]
    fn durations_that_would_overflow_a_deadline_are_refused() {
        assert!(parse_duration("2e19").is_err());
        assert!(parse_duration("1e19").is_err());
        assert!(parse_duration("500000000years").is_err());
        assert!(parse_duration("3650days").is_ok());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("1 kb"), Ok(1024));
        assert_eq!(parse_size("1_000"), Ok(1000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").unwrap_err().contains("unit"));
        assert!(parse_size("-1").is_err());
        assert_eq!(parse_size("1.5MiB"), Ok(3 << 19));
        assert_eq!(parse_size("0.5 KiB"), Ok(512));
        assert!(parse_size("1.5")
            .unwrap_err()
            .contains("whole number of bytes"));
        assert!(parse_size("1.2.3MiB").is_err());
        assert!(parse_size("1e30GiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }
}
