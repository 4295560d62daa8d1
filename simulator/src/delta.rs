//! `satcast-sim delta`: bytes on the air for a new version of a payload, against the full
//! object: the payload compressed (what the uplink airs with no base), as a patch against
//! the previous version (what it airs to counties holding it), and the airing of a patch
//! to N counties of which a share holds the base, the others getting the full object
//! afterwards, simulated with the same broadcast machine and loss as `satcast-sim run`.
//!
//! With no files it measures the national division-code table (data/divisions) after a
//! seeded year of changes ([`year_of_changes`]).

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use satcast_protocol::codec;
use satcast_protocol::manifest::Kind;
use serde::Serialize;

use crate::divisions::{AREAS_CSV, PROVINCES_CSV};
use crate::run::{self, DeliverySpec, LossSpec, RunError, RunOptions};

/// Prefecture-level divisions: code,name,provinceCode.
pub const CITIES_CSV: &str = include_str!("../../data/divisions/cities.csv");
/// Counties renamed in a year of changes.
pub const RENAMED: usize = 30;
/// Counties merged into a neighbour (their line goes, the neighbour is renamed).
pub const MERGED: usize = 8;
/// Counties created (a new code in an existing city).
pub const CREATED: usize = 10;
/// The most receivers an airing simulates (the division table's counties).
pub const RECEIVERS_MAX: usize = 2978;

/// The national table as one file: provinces, prefectures, counties.
pub fn division_table() -> String {
    [PROVINCES_CSV, CITIES_CSV, AREAS_CSV].concat()
}

/// A realistic year of changes to the table, drawn from `seed`: [`RENAMED`] counties
/// renamed, [`MERGED`] merged into the next line's county, [`CREATED`] created (a new code
/// beside an existing county, inserted in code order).
pub fn year_of_changes(table: &str, seed: u64) -> String {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut lines: Vec<String> = table.lines().map(str::to_owned).collect();
    let is_county = |line: &String| line.split(',').next().is_some_and(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit()));
    let mut picks: Vec<usize> = lines.iter().enumerate().filter(|(_, l)| is_county(l)).map(|(i, _)| i).collect();
    picks.shuffle(&mut rng);
    let rename = |line: &str, name: String| -> String {
        let mut fields: Vec<String> = line.split(',').map(str::to_owned).collect();
        if fields.len() > 1 {
            fields[1] = format!("\"{name}\"");
        }
        fields.join(",")
    };
    for (n, &i) in picks.iter().take(RENAMED).enumerate() {
        let old = lines[i].split(',').nth(1).unwrap_or_default().trim_matches('"').to_owned();
        let stem = old.trim_end_matches(['县', '区', '市']);
        // Half become a district or a city (a suffix they do not have now: the common
        // change), half take a new name of two characters from anywhere in CJK.
        let renamed = if n % 2 == 0 {
            let first = rng.random_range(0..3);
            (0..3)
                .map(|k| format!("{stem}{}", ["区", "市", "县"][(first + k) % 3]))
                .find(|r| *r != old)
                .unwrap_or_else(|| format!("{old}新"))
        } else {
            let new_char = |rng: &mut ChaCha8Rng| char::from_u32(rng.random_range(0x4E00..0x9FA6)).unwrap_or('新');
            format!("{}{}区", new_char(&mut rng), new_char(&mut rng))
        };
        lines[i] = rename(&lines[i], renamed);
    }
    let mut gone = Vec::new();
    for &i in picks.iter().skip(RENAMED).take(MERGED) {
        if i + 1 < lines.len() {
            let old = lines[i + 1].split(',').nth(1).unwrap_or_default().trim_matches('"').to_owned();
            lines[i + 1] = rename(&lines[i + 1], format!("{}新区", old.trim_end_matches(['县', '区'])));
            gone.push(i);
        }
    }
    for &i in picks.iter().skip(RENAMED + MERGED).take(CREATED) {
        let mut fields: Vec<String> = lines[i].split(',').map(str::to_owned).collect();
        let Ok(code) = fields[0].parse::<u32>() else { continue };
        // Codes ending in 80..99 are rarely taken: a plausible new county in the same city.
        fields[0] = format!("{:06}", code - code % 100 + 80 + rng.random_range(0..20));
        let new_char = |rng: &mut ChaCha8Rng| char::from_u32(rng.random_range(0x4E00..0x9FA6)).unwrap_or('新');
        fields[1] = format!("\"{}{}新区\"", new_char(&mut rng), new_char(&mut rng));
        lines[i] = format!("{}\n{}", lines[i], fields.join(","));
    }
    gone.sort_unstable();
    for i in gone.into_iter().rev() {
        lines.remove(i);
    }
    lines.join("\n") + "\n"
}

/// What one payload costs on the air, coded each way.
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    /// What was measured.
    pub name: String,
    /// The new version, whole.
    pub full_bytes: u64,
    /// Compressed as the uplink would (level by kind and size).
    pub compressed_bytes: u64,
    /// As a patch against the previous version, if there is one.
    pub patch_bytes: Option<u64>,
    /// The best the uplink airs to a county holding the base, over the full object.
    pub best_ratio: f64,
}

/// Measures `new` (of `kind`) against `base`.
pub fn measure(name: &str, kind: Kind, base: Option<&[u8]>, new: &[u8]) -> Result<Measure, codec::PatchError> {
    let level = codec::level_for(kind, new.len() as u64);
    let mut compressed = Vec::new();
    codec::compress(&mut &new[..], new.len() as u64, level, &mut compressed)?;
    let patch_bytes = match base.map(|base| codec::make_patch(base, new, level)) {
        Some(Ok(patch)) => Some(patch.len() as u64),
        // Beyond what a patch may span the uplink airs it compressed, as without a base.
        Some(Err(codec::PatchError::TooLarge { .. })) | None => None,
        Some(Err(error)) => return Err(error),
    };
    let full = new.len() as u64;
    let best = patch_bytes.unwrap_or(u64::MAX).min(compressed.len() as u64).min(full);
    Ok(Measure {
        name: name.to_owned(),
        full_bytes: full,
        compressed_bytes: compressed.len() as u64,
        patch_bytes,
        best_ratio: best as f64 / full.max(1) as f64,
    })
}

/// One airing mix: the patch to every county, then the full object (compressed) to those
/// without the base, against the full object (uncompressed, as v1 aired it) to every county.
#[derive(Debug, Clone, Serialize)]
pub struct Mix {
    /// Share of counties holding the base.
    pub share_with_base: f64,
    /// Counties targeted.
    pub receivers: usize,
    /// Bytes on the air for the patch airing (IP and UDP headers, repair included).
    pub patch_airing_bytes: u64,
    /// Bytes on the air for the full airing to the counties without the base.
    pub full_airing_bytes: u64,
    /// Bytes on the air for the full object, uncompressed, to every county.
    pub uncoded_bytes: u64,
    /// (patch + full airing) / uncoded.
    pub ratio: f64,
}

/// Simulates the airings of one [`Mix`] per share, at `loss` independent loss per county.
pub fn mixes(measure: &Measure, receivers: usize, shares: &[f64], loss: f64, seed: u64) -> Result<Vec<Mix>, RunError> {
    let air = |receivers: usize, size_bytes: u64| -> Result<u64, RunError> {
        if receivers == 0 || size_bytes == 0 {
            return Ok(0);
        }
        let options = RunOptions {
            receivers,
            size_bytes,
            // As the uplink does: an object under one symbol airs in a symbol of its size.
            symbol_size: satcast_protocol::fec::Oti::symbol_size_for(size_bytes, RunOptions::new(seed).symbol_size),
            loss: LossSpec::Independent { loss },
            delivery: DeliverySpec::Feedback,
            ..RunOptions::new(seed)
        };
        Ok(run::run(&options)?.bytes_on_air)
    };
    let receivers = receivers.clamp(1, RECEIVERS_MAX);
    let uncoded = air(receivers, measure.full_bytes)?;
    let patch = measure.patch_bytes.unwrap_or(measure.compressed_bytes);
    let patch_airing_bytes = air(receivers, patch)?;
    let mut out = Vec::new();
    for &share in shares {
        let without = ((1.0 - share) * receivers as f64).round() as usize;
        // Without a base to patch against, the first airing is the compressed object itself.
        let full_airing_bytes =
            if measure.patch_bytes.is_some() { air(without, measure.compressed_bytes.min(measure.full_bytes))? } else { 0 };
        out.push(Mix {
            share_with_base: share,
            receivers,
            patch_airing_bytes,
            full_airing_bytes,
            uncoded_bytes: uncoded,
            ratio: (patch_airing_bytes + full_airing_bytes) as f64 / uncoded.max(1) as f64,
        });
    }
    Ok(out)
}

/// The report's text: one line per measure, one per mix.
pub fn summary(measures: &[(Measure, Vec<Mix>)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (m, mixes) in measures {
        let patch = m.patch_bytes.map_or("-".to_owned(), |p| format!("{p} ({:.2}%)", 100.0 * p as f64 / m.full_bytes.max(1) as f64));
        let _ = writeln!(
            out,
            "{}: full {} bytes, compressed {} ({:.1}%), patch {}",
            m.name,
            m.full_bytes,
            m.compressed_bytes,
            100.0 * m.compressed_bytes as f64 / m.full_bytes.max(1) as f64,
            patch
        );
        for mix in mixes {
            let _ = writeln!(
                out,
                "  {:>3.0}% of {} counties hold the base: {} + {} bytes on the air, {:.2}% of the full object's {}",
                mix.share_with_base * 100.0,
                mix.receivers,
                mix.patch_airing_bytes,
                mix.full_airing_bytes,
                mix.ratio * 100.0,
                mix.uncoded_bytes
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_year_of_changes_changes_the_table_a_little_and_is_seeded() {
        let table = division_table();
        let a = year_of_changes(&table, 7);
        assert_eq!(a, year_of_changes(&table, 7), "one seed, one year");
        assert_ne!(a, table);
        let (before, after) = (table.lines().count(), a.lines().count());
        assert_eq!(after, before - MERGED + CREATED, "{before} lines became {after}");
        let changed = table.lines().filter(|l| !a.contains(l)).count();
        assert!((RENAMED..=RENAMED + 2 * MERGED).contains(&changed), "{changed} lines changed");
    }

    #[test]
    fn the_code_table_update_is_under_three_percent_on_the_air() {
        let table = division_table();
        let new = year_of_changes(&table, 1);
        let m = measure("divisions", Kind::CodeTable, Some(table.as_bytes()), new.as_bytes()).expect("measure");
        println!("{}", summary(&[(m.clone(), Vec::new())]));
        assert!(m.best_ratio <= 0.03, "{m:?}");
    }
}
