//! A column value between the database and the archive: read as the column's
//! [`Kind`], written as portable JSON (see [`Kind`] for each form), and back into a
//! typed SQL value for the target column on restore. The same row reads the same
//! JSON from SQLite and from PostgreSQL, so an archive restores into either.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use sea_orm::{DbBackend, QueryResult, Value};
use serde_json::Value as Json;

use super::schema::Kind;

/// Why a value could not be converted; the caller adds the table and column.
pub type ValueError = String;

/// Reads column `index` of `row` as `kind`, as archive JSON.
pub fn read(row: &QueryResult, index: usize, kind: Kind, backend: DbBackend) -> Result<Json, ValueError> {
    let failed = |e: sea_orm::DbErr| e.to_string();
    Ok(match kind {
        Kind::Text => row.try_get_by_index::<Option<String>>(index).map_err(failed)?.map(Json::String).into(),
        // SQLite has one integer type, so a 32-bit column reads as a 64-bit one there
        Kind::Int32 if backend == DbBackend::Postgres => {
            row.try_get_by_index::<Option<i32>>(index).map_err(failed)?.into()
        }
        Kind::Int32 | Kind::Int64 => row.try_get_by_index::<Option<i64>>(index).map_err(failed)?.into(),
        Kind::Double => {
            row.try_get_by_index::<Option<f64>>(index).map_err(failed)?.map(double_to_json).into()
        }
        Kind::Bool => row.try_get_by_index::<Option<bool>>(index).map_err(failed)?.into(),
        Kind::Json => match row.try_get_by_index::<Option<Json>>(index).map_err(failed)? {
            Some(document) => Json::String(document.to_string()),
            None => Json::Null,
        },
        Kind::Timestamp => row
            .try_get_by_index::<Option<DateTime<Utc>>>(index)
            .map_err(failed)?
            .map(|t| Json::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)))
            .into(),
        Kind::Bytes => {
            row.try_get_by_index::<Option<Vec<u8>>>(index).map_err(failed)?.map(|b| STANDARD.encode(b)).into()
        }
    })
}

fn double_to_json(value: f64) -> Json {
    if value.is_nan() {
        Json::String("NaN".to_owned())
    } else if value.is_infinite() {
        Json::String(if value > 0.0 { "Infinity" } else { "-Infinity" }.to_owned())
    } else {
        serde_json::Number::from_f64(value).map_or(Json::Null, Json::Number)
    }
}

/// The SQL value of archive JSON `value` for a target column of kind `kind`.
pub fn write(value: &Json, kind: Kind) -> Result<Value, ValueError> {
    if value.is_null() {
        return Ok(null_of(kind));
    }
    let wrong = || format!("expected {}, found {}", expected(kind), shape(value));
    Ok(match kind {
        Kind::Text => Value::String(Some(value.as_str().ok_or_else(wrong)?.to_owned())),
        Kind::Int32 => {
            let wide = value.as_i64().ok_or_else(wrong)?;
            let narrow =
                i32::try_from(wide).map_err(|_| format!("{wide} does not fit a 32-bit integer column"))?;
            Value::Int(Some(narrow))
        }
        Kind::Int64 => Value::BigInt(Some(value.as_i64().ok_or_else(wrong)?)),
        Kind::Double => Value::Double(Some(match value {
            Json::Number(n) => n.as_f64().ok_or_else(wrong)?,
            Json::String(s) if s == "NaN" => f64::NAN,
            Json::String(s) if s == "Infinity" => f64::INFINITY,
            Json::String(s) if s == "-Infinity" => f64::NEG_INFINITY,
            _ => return Err(wrong()),
        })),
        Kind::Bool => Value::Bool(Some(value.as_bool().ok_or_else(wrong)?)),
        Kind::Json => {
            let text = value.as_str().ok_or_else(wrong)?;
            let document: Json =
                serde_json::from_str(text).map_err(|e| format!("invalid JSON document: {e}"))?;
            Value::Json(Some(Box::new(document)))
        }
        Kind::Timestamp => {
            let text = value.as_str().ok_or_else(wrong)?;
            let time =
                DateTime::parse_from_rfc3339(text).map_err(|e| format!("invalid time {text:?}: {e}"))?;
            Value::ChronoDateTimeUtc(Some(time.with_timezone(&Utc)))
        }
        Kind::Bytes => {
            let text = value.as_str().ok_or_else(wrong)?;
            Value::Bytes(Some(STANDARD.decode(text).map_err(|e| format!("invalid base64: {e}"))?))
        }
    })
}

/// A NULL typed for the column: PostgreSQL refuses a NULL of another type.
fn null_of(kind: Kind) -> Value {
    match kind {
        Kind::Text => Value::String(None),
        Kind::Int32 => Value::Int(None),
        Kind::Int64 => Value::BigInt(None),
        Kind::Double => Value::Double(None),
        Kind::Bool => Value::Bool(None),
        Kind::Json => Value::Json(None),
        Kind::Timestamp => Value::ChronoDateTimeUtc(None),
        Kind::Bytes => Value::Bytes(None),
    }
}

fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Text | Kind::Json | Kind::Timestamp | Kind::Bytes => "a string",
        Kind::Int32 | Kind::Int64 => "an integer",
        Kind::Double => "a number",
        Kind::Bool => "true or false",
    }
}

fn shape(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn archive_json_converts_to_typed_values() {
        assert_eq!(write(&json!("a"), Kind::Text).unwrap(), Value::String(Some("a".to_owned())));
        assert_eq!(write(&json!(7), Kind::Int32).unwrap(), Value::Int(Some(7)));
        assert_eq!(write(&json!(1_i64 << 40), Kind::Int64).unwrap(), Value::BigInt(Some(1 << 40)));
        assert!(write(&json!(1_i64 << 40), Kind::Int32).is_err(), "out of range");
        assert_eq!(write(&json!(-1e9), Kind::Double).unwrap(), Value::Double(Some(-1e9)));
        assert!(matches!(write(&json!("NaN"), Kind::Double).unwrap(), Value::Double(Some(x)) if x.is_nan()));
        assert_eq!(write(&json!(true), Kind::Bool).unwrap(), Value::Bool(Some(true)));
        assert_eq!(
            write(&json!("[\"cs.CV\"]"), Kind::Json).unwrap(),
            Value::Json(Some(Box::new(json!(["cs.CV"]))))
        );
        assert_eq!(write(&json!("null"), Kind::Json).unwrap(), Value::Json(Some(Box::new(Json::Null))));
        let time = write(&json!("2025-06-01T12:00:00.5Z"), Kind::Timestamp).unwrap();
        let Value::ChronoDateTimeUtc(Some(time)) = time else { panic!("a time: {time:?}") };
        assert_eq!(time.to_rfc3339_opts(SecondsFormat::AutoSi, true), "2025-06-01T12:00:00.500Z");
        assert_eq!(write(&json!("AQI="), Kind::Bytes).unwrap(), Value::Bytes(Some(vec![1, 2])));
    }

    #[test]
    fn nulls_are_typed_and_mismatches_are_named() {
        assert_eq!(write(&Json::Null, Kind::Timestamp).unwrap(), Value::ChronoDateTimeUtc(None));
        assert_eq!(write(&Json::Null, Kind::Json).unwrap(), Value::Json(None));
        assert_eq!(write(&json!(3), Kind::Text).unwrap_err(), "expected a string, found a number");
        assert!(write(&json!("yesterday"), Kind::Timestamp).unwrap_err().contains("invalid time"));
        assert!(write(&json!("{"), Kind::Json).unwrap_err().contains("invalid JSON"));
    }

    #[test]
    fn non_finite_doubles_survive() {
        assert_eq!(double_to_json(f64::INFINITY), json!("Infinity"));
        assert_eq!(double_to_json(f64::NEG_INFINITY), json!("-Infinity"));
        assert_eq!(double_to_json(0.25), json!(0.25));
    }
}
