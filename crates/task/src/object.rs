//! Reading a struct from JSON as an object only.
//!
//! serde's derived reading of a struct also takes a sequence of its fields in order, so
//! `"limits": [null, 64]` or a task written as `["t1", "fib.wasm"]` would be taken, by field
//! position, for something the writer never meant. In human-readable formats (JSON) these read
//! only a map; binary formats, whose structs are sequences, read as derived.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};

/// A `T` read from an object only (see the module's doc).
#[derive(Debug, Clone, PartialEq)]
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        only(d).map(Object)
    }
}

/// Reads a `T` from an object only; for `#[serde(deserialize_with = "...")]` on a field.
///
/// # Errors
/// The format's error for anything but a map ("expected an object"), or `T`'s own errors.
pub fn only<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    if !d.is_human_readable() {
        return T::deserialize(d);
    }
    d.deserialize_map(MapOnly(PhantomData))
}

/// The visitor behind [`only`]: a map goes to `T`'s own reading, anything else is refused.
struct MapOnly<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for MapOnly<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{TaskLimits, TaskSpec};

    #[test]
    fn an_object_reads_as_derived() {
        let Object(limits): Object<TaskLimits> =
            serde_json::from_str(r#"{"fuel": 1000, "max_memory_mb": 64}"#).unwrap();
        assert_eq!(limits.fuel, Some(1000));
        assert_eq!(limits.max_memory_mb, Some(64));
    }

    #[test]
    fn a_sequence_of_the_fields_is_refused_naming_what_is_expected() {
        let e = serde_json::from_str::<Object<TaskLimits>>("[null, 64]").unwrap_err();
        assert!(e.to_string().contains("expected an object"), "{e}");
        let e = serde_json::from_str::<Object<TaskSpec>>(r#"["t1", "fib.wasm"]"#).unwrap_err();
        assert!(e.to_string().contains("expected an object"), "{e}");
    }

    #[test]
    fn limits_inside_a_task_are_an_object_too() {
        let e = serde_json::from_str::<Object<TaskSpec>>(
            r#"{"task_id": "t1", "wasm_cid": "fib.wasm", "limits": [null, 64]}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("expected an object"), "{e}");
        let Object(task): Object<TaskSpec> = serde_json::from_str(
            r#"{"task_id": "t1", "wasm_cid": "fib.wasm", "limits": {"fuel": 5}}"#,
        )
        .unwrap();
        assert_eq!(task.limits.fuel, Some(5));
    }
}
