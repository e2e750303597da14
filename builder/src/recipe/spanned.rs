//! [`Spanned<T>`]: a recipe value with its byte span, which also describes itself in the
//! JSON Schema.
//!
//! `toml::Spanned` carries the span, but it is a foreign type, so it cannot implement
//! `schemars::JsonSchema`. This newtype deserializes exactly like it (serde `transparent`)
//! and reports the schema of `T`, so the raw recipe structs stay the single model that the
//! parser, `jeos schema` and `docs/recipe.md` are derived from.

use std::borrow::Cow;
use std::ops::Range;

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Deserialize;

/// A value with the byte range it was read from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Spanned<T>(toml::Spanned<T>);

impl<T> Spanned<T> {
    /// Wraps `value` read from `span`.
    pub fn new(span: Range<usize>, value: T) -> Self {
        Self(toml::Spanned::new(span, value))
    }

    /// The byte range of the value in the recipe text.
    pub fn span(&self) -> Range<usize> {
        self.0.span()
    }

    /// The value.
    pub fn get_ref(&self) -> &T {
        self.0.get_ref()
    }

    /// The value, mutably.
    pub fn get_mut(&mut self) -> &mut T {
        self.0.get_mut()
    }

    /// The value, without its span.
    pub fn into_inner(self) -> T {
        self.0.into_inner()
    }
}

impl<T: JsonSchema> JsonSchema for Spanned<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Holder {
        value: Spanned<i64>,
    }

    #[test]
    fn keeps_the_span_of_the_value() {
        let holder: Holder = toml::from_str("value = 42\n").expect("valid");
        assert_eq!(*holder.value.get_ref(), 42);
        assert_eq!(holder.value.span(), 8..10);
    }

    #[test]
    fn schema_is_the_inner_type() {
        let outer = schemars::schema_for!(Spanned<i64>);
        let inner = schemars::schema_for!(i64);
        assert_eq!(outer, inner);
    }
}
