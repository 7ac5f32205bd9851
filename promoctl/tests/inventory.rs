//! `promoctl inventory seed|show` against real PostgreSQL and Redis: a lost
//! counter is rebuilt as total minus what is taken, a live one is kept
//! unless forced.

mod common;

use common::{fresh_with_url, redis_url, Schema};
use std::process::Command;
use uuid::Uuid;

fn ctl(coupon: &str, timesale: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_promoctl"))
        .args(args)
        .args(["--coupon-db", coupon, "--timesale-db", timesale])
        .args(["--redis-url", &redis_url()])
        .env(
            "PROMOCTL_CONFIG_DIR",
            std::env::temp_dir().join(Uuid::new_v4().to_string()),
        )
        .output()
        .expect("run promoctl");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn seed_rebuilds_lost_stock_and_keeps_live_counters() {
    let (coupon, coupon_url) = fresh_with_url(Schema::Coupon).await;
    let (ts, ts_url) = fresh_with_url(Schema::Timesale).await;
    let (product, sale) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query("INSERT INTO products (id, name, price) VALUES ($1, 'p', 1000)")
        .bind(product)
        .execute(&ts)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO time_sales (id, product_id, total_quantity, sold_quantity, remaining_quantity,
            sale_price, per_user_limit, start_at, end_at)
         VALUES ($1, $2, 10, 3, 7, 500, 5, now(), now() + interval '1 hour')",
    )
    .bind(sale)
    .bind(product)
    .execute(&ts)
    .await
    .unwrap();
    let user = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO time_sale_orders (id, time_sale_id, user_id, quantity, unit_price, total_price, status)
         VALUES ($1, $2, $3, 3, 500, 1500, 'CONFIRMED')",
    )
    .bind(Uuid::new_v4())
    .bind(sale)
    .bind(user)
    .execute(&ts)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO time_sale_user_totals (time_sale_id, user_id, quantity, per_user_limit) VALUES ($1, $2, 3, 5)",
    )
    .bind(sale)
    .bind(user)
    .execute(&ts)
    .await
    .unwrap();

    let (code, out) = ctl(&coupon_url, &ts_url, &["inventory", "show"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("not loaded"), "{out}");

    let (code, out) = ctl(
        &coupon_url,
        &ts_url,
        &["inventory", "seed", &sale.to_string()],
    );
    assert_eq!(code, 0, "{out}");
    let mut r = redis().await;
    let stock: i64 = redis::cmd("GET")
        .arg(promo_store::keys::timesale_inventory(sale))
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(stock, 7, "total 10 minus 3 confirmed");

    // A live counter is kept without --force, replaced with it.
    let _: () = redis::cmd("SET")
        .arg(promo_store::keys::timesale_inventory(sale))
        .arg(5)
        .query_async(&mut r)
        .await
        .unwrap();
    let (code, out) = ctl(
        &coupon_url,
        &ts_url,
        &["inventory", "seed", &sale.to_string()],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("live counter was kept"), "{out}");
    let (_, out) = ctl(&coupon_url, &ts_url, &["inventory", "show", "-o", "json"]);
    assert!(out.contains("\"behind\""), "{out}");
    let (code, _) = ctl(
        &coupon_url,
        &ts_url,
        &["inventory", "seed", "--all", "--force"],
    );
    assert_eq!(code, 0);
    let stock: i64 = redis::cmd("GET")
        .arg(promo_store::keys::timesale_inventory(sale))
        .query_async(&mut r)
        .await
        .unwrap();
    assert_eq!(stock, 7);

    let (code, out) = ctl(
        &coupon_url,
        &ts_url,
        &["inventory", "seed", &Uuid::new_v4().to_string()],
    );
    assert_eq!(code, 1, "unknown id: {out}");
    coupon.close().await;
    ts.close().await;
}
