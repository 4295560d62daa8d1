//! The national division table (data/divisions/areas.csv), built into the uplink: the
//! daemon fills its receiver registry from it, and refuses a job (`admit`) for a target
//! under which the table has no county (a mistyped `--to 99` would otherwise air to nobody
//! and "succeed").

/// Every county-level division: `code,name,cityCode,provinceCode`, one a line after a header.
pub const AREAS_CSV: &str = include_str!("../../data/divisions/areas.csv");

/// Whether the table has a county whose code starts with `prefix` ("" is the nation).
pub fn has_county_under(prefix: &str) -> bool {
    AREAS_CSV.lines().skip(1).filter_map(|line| line.split(',').next()).any(|code| code.trim().starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provinces_prefectures_and_counties_in_the_table_have_counties_and_others_do_not() {
        for prefix in ["", "41", "4101", "410102", "11", "110101"] {
            assert!(has_county_under(prefix), "{prefix:?}");
        }
        for prefix in ["99", "4199", "419999", "00", "code"] {
            assert!(!has_county_under(prefix), "{prefix:?}");
        }
    }
}
