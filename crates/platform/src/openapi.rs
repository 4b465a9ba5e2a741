//! The OpenAPI document a service serves: its handlers' own annotations, completed with every
//! answer the shared edge and extractors can give on any route — so the document lists every
//! response a route can give, each error as RFC 9457 problem JSON, and a handler's annotation
//! says only what is its own. Also the schemas of the identifiers every API shares, built from
//! the same rules the `events` types validate with.

use serde_json::{Value, json};
use utoipa::PartialSchema;
use utoipa::openapi::path::{Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::{OpenApi, RefOr, Required};

use crate::problem::{FieldError, PROBLEM_JSON, Problem};

/// `doc` with the answers of the edge and the extractors on every operation, every error
/// response as problem JSON, `Retry-After` where the edge sends it, and the admin routes'
/// `bearer` security scheme — as the JSON that is served.
pub fn complete(mut doc: OpenApi) -> Value {
    let schemas = &mut doc.components.get_or_insert_with(Default::default).schemas;
    for (name, schema) in [
        ("Problem", <Problem as PartialSchema>::schema()),
        ("FieldError", <FieldError as PartialSchema>::schema()),
    ] {
        schemas.entry(name.to_owned()).or_insert(schema);
    }
    // utoipa's types serialize infallibly (string keys, no non-finite numbers).
    let mut value = serde_json::to_value(&doc).unwrap_or_default();
    if let Some(paths) = value.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for (method, operation) in item.iter_mut() {
                if ["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                    complete_operation(operation);
                }
            }
        }
    }
    value["components"]["securitySchemes"]["bearer"] = json!({
        "type": "http",
        "scheme": "bearer",
        "description": "The service's ADMIN_TOKEN (admin endpoints only)",
    });
    value
}

fn complete_operation(operation: &mut Value) {
    let parameters_in = |place: &str| {
        operation["parameters"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == place))
    };
    let mut answers: Vec<(&str, &str)> = vec![
        (
            "429",
            "Too many requests from this client; retry after `Retry-After`",
        ),
        (
            "500",
            "Internal error; nothing internal is shown, the cause is logged",
        ),
        (
            "503",
            "Not ready, the event bus is unavailable, or the request timed out; retry after `Retry-After`",
        ),
    ];
    if parameters_in("path") || parameters_in("query") {
        answers.push(("400", "A path or query parameter is malformed"));
    }
    if parameters_in("query") {
        answers.push(("422", "A query parameter is out of range"));
    }
    if operation.get("requestBody").is_some() {
        answers.extend([
            ("400", "The body is not valid JSON"),
            ("413", "The body is too large"),
            ("415", "The body is not `application/json`"),
            ("422", "The body does not match the schema, or is invalid"),
        ]);
    }
    if operation.get("security").is_some() {
        answers.extend([
            ("401", "No bearer token, or an invalid or expired one"),
            (
                "403",
                "The token does not allow this: a wrong admin token, admin endpoints disabled \
                 (no ADMIN_TOKEN), or another customer's id in the request",
            ),
        ]);
    }
    let responses = &mut operation["responses"];
    for (status, description) in answers {
        if responses.get(status).is_none() {
            responses[status] = json!({ "description": description });
        }
    }
    let Some(responses) = responses.as_object_mut() else {
        return;
    };
    for (status, response) in responses.iter_mut() {
        if status.starts_with('4') || status.starts_with('5') {
            response["content"] = json!({
                PROBLEM_JSON: { "schema": { "$ref": "#/components/schemas/Problem" } }
            });
        }
        if status == "401" {
            response["headers"]["WWW-Authenticate"] = json!({
                "description": "How to authenticate (sent on the customer routes)",
                "schema": { "type": "string" },
            });
        }
        if status == "429" || status == "503" {
            response["headers"]["Retry-After"] = json!({
                "description": "Seconds to wait before retrying",
                "schema": { "type": "integer", "minimum": 0 },
            });
        }
    }
}

/// A token identifier (SKU, customer id): what [`events::Sku`] and [`events::CustomerId`]
/// accept.
pub fn token_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(events::TOKEN_PATTERN))
        .min_length(Some(1))
        .max_length(Some(events::TOKEN_MAX_LEN))
        .into()
}

/// A parameter with its schema built here (utoipa drops a field's `required` and doc comment
/// when its schema comes from `schema_with`, so parameter lists are written with this).
pub fn parameter(
    name: &str,
    place: ParameterIn,
    required: bool,
    description: &str,
    schema: RefOr<Schema>,
) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(place)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// The `{sku}` of a path: a token identifier.
#[derive(Debug)]
pub struct SkuPath;

impl utoipa::IntoParams for SkuPath {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![parameter(
            "sku",
            ParameterIn::Path,
            true,
            "The SKU: 1–64 of `A-Z a-z 0-9 _ -`",
            token_schema(),
        )]
    }
}

/// An order id: a UUID.
pub fn order_id_schema() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Uuid,
        )))
        .into()
}

/// An integer in `min..=max`.
pub fn integer_schema(min: u64, max: u64) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(min as f64))
        .maximum(Some(max as f64))
        .into()
}

/// One of `values`.
pub fn enum_schema(values: &[&str]) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .into()
}

/// 1 to `max` items of the component schema `item`.
pub fn list_schema(item: &str, max: usize) -> RefOr<Schema> {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(item)))
        .min_items(Some(1))
        .max_items(Some(max))
        .into()
}
