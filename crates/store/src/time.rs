//! Time as the store keeps it (Unix seconds) and as kas's API and proxy
//! show it (RFC 3339 in UTC).

use crate::model::UnixTime;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub fn now() -> UnixTime {
    OffsetDateTime::now_utc().unix_timestamp()
}

pub fn to_rfc3339(t: UnixTime) -> String {
    OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|d| d.format(&Rfc3339).ok())
        .unwrap_or_else(|| t.to_string())
}

/// A text that is not an RFC 3339 time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an RFC 3339 time such as 2027-01-31T12:00:00Z")]
pub struct NotATime(pub String);

pub fn from_rfc3339(text: &str) -> Result<UnixTime, NotATime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .map(OffsetDateTime::unix_timestamp)
        .map_err(|_| NotATime(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_rfc3339() {
        assert_eq!(to_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(from_rfc3339("2027-01-31T12:00:00Z"), Ok(1_801_396_800));
        assert_eq!(from_rfc3339(&to_rfc3339(1_801_396_800)), Ok(1_801_396_800));
        assert_eq!(from_rfc3339("2027-01-31T14:00:00+02:00"), Ok(1_801_396_800));
        assert!(from_rfc3339("tomorrow").is_err());
    }
}
