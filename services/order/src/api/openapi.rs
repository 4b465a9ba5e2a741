//! The order API's OpenAPI document: its paths (documented on the handlers) and, with customer
//! authentication on, the `customer` bearer scheme on every route.

use utoipa::OpenApi;

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "orderflow order-service",
        description = "Create, read, list and cancel orders."
    ),
    paths(
        super::create_order,
        super::get_order,
        super::list_orders,
        super::cancel_order
    )
)]
pub struct ApiDoc;

/// Marks the order routes as needing a customer token (authentication on): the `customer`
/// bearer scheme, and `customer_id` no longer required in the body or the query.
pub(crate) fn require_customer_tokens(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    use utoipa::openapi::{RefOr, Required, schema::Schema};
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "customer",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A customer's token from the identity provider (RS256 or ES256)",
                ))
                .build(),
        ),
    );
    if let Some(RefOr::T(Schema::Object(create))) = components.schemas.get_mut("CreateOrder") {
        create.required.retain(|field| field != "customer_id");
    }
    for item in doc.paths.paths.values_mut() {
        for operation in [&mut item.get, &mut item.post].into_iter().flatten() {
            operation.security = Some(vec![SecurityRequirement::new(
                "customer",
                Vec::<String>::new(),
            )]);
            for parameter in operation.parameters.iter_mut().flatten() {
                if let RefOr::T(parameter) = parameter
                    && parameter.name == "customer_id"
                {
                    parameter.required = Required::False;
                }
            }
        }
    }
}
