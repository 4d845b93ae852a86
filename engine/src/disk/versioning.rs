//! The rules of Syncthing's versioners that keep several versions of a file (`simple`,
//! `staggered`): the tag a kept version's name carries, and which versions of one file go
//! when a new one is kept or the folder is cleaned. Pure: names and times in, decisions
//! out (`versions` does the moving).

use jiff::Timestamp;

use crate::model::planner::conflict_name_parts;

/// `stem~YYYYMMDD-HHMMSS.ext`: the version tag (UTC) goes before the extension, as
/// Syncthing names versions, so a kept `report.pdf` still opens as a PDF.
pub(crate) fn tagged_name(name: &str, at: Timestamp) -> String {
    // Split as conflict copies are named: a leading dot starts a hidden name, not an
    // extension.
    let (dir, stem, ext) = conflict_name_parts(name);
    let tagged = format!("{stem}~{}{ext}", at.strftime("%Y%m%d-%H%M%S"));
    match dir {
        Some(dir) => format!("{dir}/{tagged}"),
        None => tagged,
    }
}

/// The name a kept version was a version of, and when it was kept, if `stored` (a path in
/// the versions directory) carries a tag: `stem~TAG.ext` or `name~TAG`.
pub(crate) fn parse_tagged(stored: &str) -> Option<(String, Timestamp)> {
    let (dir, base) = match stored.rsplit_once('/') {
        Some((dir, base)) => (Some(dir), base),
        None => (None, stored),
    };
    let tilde = base.rfind('~')?;
    let tag = base.get(tilde + 1..tilde + 16)?;
    let rest = &base[tilde + 16..];
    if !(rest.is_empty() || rest.starts_with('.')) || tilde == 0 {
        return None;
    }
    let civil = jiff::civil::DateTime::strptime("%Y%m%d-%H%M%S", tag).ok()?;
    let at = jiff::tz::TimeZone::UTC.to_timestamp(civil).ok()?;
    let original = format!("{}{rest}", &base[..tilde]);
    let original = match dir {
        Some(dir) => format!("{dir}/{original}"),
        None => original,
    };
    Some((original, at))
}

/// Of one file's versions (their tag times, oldest first), the ones beyond the newest
/// `keep` (Syncthing's simple versioning).
pub(crate) fn simple_excess(times: &[Timestamp], keep: usize) -> Vec<usize> {
    (0..times.len().saturating_sub(keep)).collect()
}

/// Of one file's versions (their tag times, oldest first), the ones staggered versioning
/// lets go at `now`: older than `max_age_s` (0: no limit), or closer to the previous one
/// kept than the spacing of their age band: one per 30 s for the first hour, one per hour
/// for the first day, one per day for the first 30 days, then one per week.
pub(crate) fn staggered_excess(times: &[Timestamp], now: Timestamp, max_age_s: i64) -> Vec<usize> {
    const BANDS: [(i64, i64); 3] = [(30, 3_600), (3_600, 86_400), (86_400, 30 * 86_400)];
    const WEEK: i64 = 7 * 86_400;
    let mut excess = Vec::new();
    let mut previous_age: Option<i64> = None;
    for (i, time) in times.iter().enumerate() {
        let age = now.as_second() - time.as_second();
        if max_age_s > 0 && age > max_age_s {
            excess.push(i);
            continue;
        }
        let Some(previous) = previous_age else {
            previous_age = Some(age);
            continue;
        };
        let step = BANDS
            .iter()
            .find(|(_, end)| age < *end)
            .map_or(WEEK, |(step, _)| *step);
        if previous - age < step {
            excess.push(i);
        } else {
            previous_age = Some(age);
        }
    }
    excess
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn tags_go_before_the_extension_and_read_back() {
        let time = at("2024-03-05T06:07:08Z");
        assert_eq!(
            tagged_name("a/report.pdf", time),
            "a/report~20240305-060708.pdf"
        );
        assert_eq!(tagged_name(".bashrc", time), ".bashrc~20240305-060708");
        for name in ["a/report.pdf", ".bashrc", "Makefile", "x/archive.tar.gz"] {
            assert_eq!(
                parse_tagged(&tagged_name(name, time)),
                Some((name.to_owned(), time)),
                "{name}"
            );
        }
        // A name moved aside whole (`NAME~TAG`) reads back too; others carry no tag.
        assert_eq!(
            parse_tagged("notes.txt~20240305-060708"),
            Some(("notes.txt".into(), time))
        );
        for plain in [
            "a/report.pdf",
            "x~y",
            "x~2024030-0607080",
            "~20240305-060708",
        ] {
            assert_eq!(parse_tagged(plain), None, "{plain}");
        }
    }

    #[test]
    fn simple_keeps_the_newest() {
        let times: Vec<Timestamp> = (0..7).map(|i| Timestamp::from_second(i).unwrap()).collect();
        assert_eq!(simple_excess(&times, 5), vec![0, 1]);
        assert!(simple_excess(&times, 10).is_empty());
    }

    #[test]
    fn staggered_thins_out_with_age() {
        let now = at("2024-06-01T00:00:00Z");
        let ago = |s: i64| Timestamp::from_second(now.as_second() - s).unwrap();
        // Oldest first: two a day apart 40 days ago (one per week there), two 10 s apart
        // within the last hour (one per 30 s), and one two years ago (beyond a year's max).
        let times = [
            ago(2 * 365 * 86_400),
            ago(41 * 86_400),
            ago(40 * 86_400),
            ago(100),
            ago(90),
            ago(10),
        ];
        assert_eq!(staggered_excess(&times, now, 365 * 86_400), vec![0, 2, 4]);
        // No maximum age: the two-year-old one stays.
        assert_eq!(staggered_excess(&times, now, 0), vec![2, 4]);
    }
}
