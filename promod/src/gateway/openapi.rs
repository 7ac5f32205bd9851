//! The OpenAPI document, generated from the route annotations, and the
//! Swagger UI (vendored assets, no CDN).

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "promo gateway", description = "Coupons, points and time sales. See API.md."),
    modifiers(&Bearer),
    paths(
        super::register, super::login, super::refresh, super::logout, super::profile,
        crate::coupon::http::create_policy, crate::coupon::http::list_policies,
        crate::coupon::http::get_policy, crate::coupon::http::update_policy,
        crate::coupon::http::issue, crate::coupon::http::use_coupon,
        crate::coupon::http::cancel_use, crate::coupon::http::get_coupon,
        crate::coupon::http::list_coupons, crate::coupon::http::reserve,
        crate::coupon::http::generate_codes, crate::coupon::http::list_codes,
        crate::coupon::http::export_codes, crate::coupon::http::redeem,
        crate::point::http::earn, crate::point::http::use_points, crate::point::http::cancel,
        crate::point::http::balance, crate::point::http::history, crate::point::http::lots,
        crate::point::http::create_hold, crate::point::http::capture_hold,
        crate::point::http::void_hold, crate::point::http::get_hold,
        crate::timesale::http::create_product, crate::timesale::http::list_products,
        crate::timesale::http::get_product, crate::timesale::http::create_sale,
        crate::timesale::http::list_sales, crate::timesale::http::get_sale,
        crate::timesale::http::update_sale, crate::timesale::http::create_order,
        crate::timesale::http::list_orders, crate::timesale::http::get_order,
        crate::timesale::http::cancel_order,
        crate::timesale::http::confirm_order,
        crate::audit::http::list,
    ),
    components(schemas(crate::error::ErrorBody, crate::error::ErrorDetail))
)]
pub struct ApiDoc;

pub fn routes() -> axum::Router {
    axum::Router::new().merge(
        utoipa_swagger_ui::SwaggerUi::new("/api/docs")
            .url("/api/docs/openapi.json", ApiDoc::openapi()),
    )
}
