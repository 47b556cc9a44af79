//! Resource quantities (`100m`, `1.5Gi`, `2e3`) as exact thousandths, enough
//! to compare a node's allocatable with the sum of its pods' requests.

/// A quantity in thousandths of its unit (millicores, millibytes), or `None`
/// when the text is no quantity.
pub fn milli(text: &str) -> Option<i128> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (mantissa, exponent) = match suffix {
        "" => (number, 0),
        s if s.starts_with(['e', 'E']) => (number, s[1..].parse::<i32>().ok()?),
        _ => (number, 0),
    };
    let (multiplier, decimal_shift): (i128, i32) = match suffix {
        s if s.starts_with(['e', 'E']) || s.is_empty() => (1, exponent),
        "m" => (1, -3),
        "k" => (1, 3),
        "M" => (1, 6),
        "G" => (1, 9),
        "T" => (1, 12),
        "P" => (1, 15),
        "E" => (1, 18),
        "Ki" => (1 << 10, 0),
        "Mi" => (1 << 20, 0),
        "Gi" => (1 << 30, 0),
        "Ti" => (1 << 40, 0),
        "Pi" => (1 << 50, 0),
        "Ei" => (1 << 60, 0),
        _ => return None,
    };
    let (negative, digits) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa.strip_prefix('+').unwrap_or(mantissa)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !whole
        .chars()
        .chain(fraction.chars())
        .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    let mut value: i128 = format!("{whole}{fraction}").parse().ok()?;
    // Thousandths: shift by 3, by the suffix's decimal exponent, and back by
    // the fraction's digits; what falls below a thousandth rounds up, as a
    // request of 0.1m is still a request.
    let shift = 3 + decimal_shift - fraction.len() as i32;
    value = value.checked_mul(multiplier)?;
    if shift >= 0 {
        value = value.checked_mul(10i128.checked_pow(shift as u32)?)?;
    } else {
        let divisor = 10i128.checked_pow((-shift) as u32)?;
        value = (value + divisor - 1) / divisor;
    }
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::milli;

    #[test]
    fn parses_the_suffixes_pods_use() {
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("2"), Some(2000));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("64Mi"), Some(64 * 1024 * 1024 * 1000));
        assert_eq!(milli("1G"), Some(1_000_000_000_000));
        assert_eq!(milli("1e3"), Some(1_000_000));
        assert_eq!(milli("110"), Some(110_000));
        assert_eq!(milli("0.0001"), Some(1), "below a thousandth rounds up");
    }

    #[test]
    fn refuses_what_is_no_quantity() {
        assert_eq!(milli("abc"), None);
        assert_eq!(milli("1Qi"), None);
        assert_eq!(milli(""), None);
    }
}
