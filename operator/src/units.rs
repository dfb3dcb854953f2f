//! Parsing the spec's Kubernetes quantities (`10Gi`) and Go durations (`720h`).
//!
//! The API server validates both with CEL before they reach the operator, but the operator still
//! parses defensively: a CRD installed without its rules, or an older stored object, must give a
//! clear error rather than a panic or a silently wrong node setting.

use std::time::Duration;

use crate::{Error, Result};

/// Bytes in a Kubernetes quantity that must be a whole number of bytes (`1Gi`, `500M`, `4096`,
/// `1.5Gi`, `1e3`).
pub fn quantity_bytes(field: &'static str, text: &str) -> Result<u64> {
    let invalid = |reason: &str| Error::InvalidSpec {
        field,
        reason: format!("{text:?} {reason}"),
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    if number.is_empty() {
        return Err(invalid("is not a quantity such as 10Gi"));
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return Err(invalid("is not a quantity such as 10Gi"));
    }
    // Value = (whole.fraction) * base^exp, computed exactly in u128 as
    // digits * base^exp / 10^len(fraction).
    let (base, exp): (u128, u32) = match suffix {
        "" => (10, 0),
        "Ki" => (1024, 1),
        "Mi" => (1024, 2),
        "Gi" => (1024, 3),
        "Ti" => (1024, 4),
        "Pi" => (1024, 5),
        "Ei" => (1024, 6),
        "k" => (10, 3),
        "M" => (10, 6),
        "G" => (10, 9),
        "T" => (10, 12),
        "P" => (10, 15),
        "E" => (10, 18),
        s if s.starts_with(['e', 'E']) => {
            let e: u32 = s[1..]
                .parse()
                .map_err(|_| invalid("has an invalid exponent"))?;
            (10, e)
        }
        _ => {
            return Err(invalid(
                "has an unknown unit (use Ki, Mi, Gi, Ti, k, M, G, T)",
            ));
        }
    };
    let digits: u128 = format!("{whole}{fraction}")
        .parse()
        .map_err(|_| invalid("is too large"))?;
    let scale = base
        .checked_pow(exp)
        .ok_or_else(|| invalid("is too large"))?;
    let divisor = 10u128
        .checked_pow(u32::try_from(fraction.len()).map_err(|_| invalid("is too long"))?)
        .ok_or_else(|| invalid("has too many decimals"))?;
    let scaled = digits
        .checked_mul(scale)
        .ok_or_else(|| invalid("is too large"))?;
    if scaled % divisor != 0 {
        return Err(invalid("is not a whole number of bytes"));
    }
    u64::try_from(scaled / divisor).map_err(|_| invalid("is too large"))
}

/// A Go duration (`300ms`, `1.5h`, `2h45m`), as the API server's CEL `duration()` reads it.
pub fn go_duration(field: &'static str, text: &str) -> Result<Duration> {
    let invalid = |reason: &str| Error::InvalidSpec {
        field,
        reason: format!("{text:?} {reason}"),
    };
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid("is not a duration such as 720h"));
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| invalid("is missing a unit (h, m, s, ms, us, ns)"))?;
        let (number, after) = rest.split_at(split);
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let nanos_per_unit: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid("has an unknown unit (use h, m, s, ms, us, ns)")),
        };
        if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
            return Err(invalid("is not a duration such as 720h"));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| invalid("is not a duration such as 720h"))?;
        let nanos = value * nanos_per_unit;
        // NB: Go's time.Duration is an i64 of nanoseconds (about 292 years); refuse more.
        if !nanos.is_finite() || nanos > i64::MAX as f64 {
            return Err(invalid("is too long"));
        }
        total = total
            .checked_add(Duration::from_nanos(nanos.round() as u64))
            .ok_or_else(|| invalid("is too long"))?;
        rest = next;
    }
    Ok(total)
}

/// A duration in the form `lognode` reads (humantime): whole seconds, or milliseconds when
/// needed.
pub fn humantime_text(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_decimal_and_plain_quantities_are_bytes() {
        let q = |t| quantity_bytes("f", t).unwrap();
        assert_eq!(q("4096"), 4096);
        assert_eq!(q("1Ki"), 1024);
        assert_eq!(q("64Mi"), 64 << 20);
        assert_eq!(q("1Gi"), 1 << 30);
        assert_eq!(q("2Ti"), 2 << 40);
        assert_eq!(q("500M"), 500_000_000);
        assert_eq!(q("1k"), 1000);
        assert_eq!(q("1.5Gi"), 3 << 29);
        assert_eq!(q("1e3"), 1000);
    }

    #[test]
    fn fractional_bytes_and_garbage_are_refused() {
        for bad in [
            "", "Gi", "1.5", "0.1k1", "10GB", "ten", "1.0001Ki", "-1Gi", "1e99",
        ] {
            let err = quantity_bytes("log.maxSegmentBytes", bad).unwrap_err();
            assert!(
                err.to_string().contains("log.maxSegmentBytes"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn go_durations_parse_like_go() {
        let d = |t| go_duration("f", t).unwrap();
        assert_eq!(d("720h"), Duration::from_secs(720 * 3600));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d("100ms"), Duration::from_millis(100));
        assert_eq!(d("9m50s"), Duration::from_secs(590));
        assert_eq!(d("10us"), Duration::from_micros(10));
        assert_eq!(d("10µs"), Duration::from_micros(10));
    }

    #[test]
    fn malformed_durations_are_refused() {
        for bad in [
            "",
            "10",
            "h",
            "10d",
            "1h 30m",
            ".5h",
            "5.h",
            "-1h",
            "9999999999h",
        ] {
            assert!(
                go_duration("tls.validity", bad).is_err(),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn durations_render_for_lognode() {
        assert_eq!(humantime_text(Duration::from_secs(604800)), "604800s");
        assert_eq!(humantime_text(Duration::from_millis(150)), "150ms");
    }
}
