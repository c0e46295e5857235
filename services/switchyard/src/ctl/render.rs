//! Tables and values as `ctl` prints them for people.

use switchyard_core::Money;
use switchyard_proto::v1 as pb;

/// Columns padded to their widest cell.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<w$}  "));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut text = line(headers.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

pub(crate) fn usd(nanos: i64) -> String {
    Money::from_nanos(nanos).to_string()
}

pub(crate) fn ago(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "never".into();
    }
    let now = switchyard_core::clock::now_ms() as i64;
    let s = (now - unix_ms).max(0) / 1000;
    match s {
        0..60 => format!("{s}s ago"),
        60..3600 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

pub(crate) fn state_name(s: i32) -> &'static str {
    match pb::EndpointState::try_from(s) {
        Ok(pb::EndpointState::Healthy) => "healthy",
        Ok(pb::EndpointState::Degraded) => "degraded",
        Ok(pb::EndpointState::Ejected) => "ejected",
        Ok(pb::EndpointState::Disabled) => "disabled",
        _ => "unknown",
    }
}
