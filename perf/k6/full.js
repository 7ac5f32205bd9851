// perf:full: every route at once, issue:use:point:order = 3:1:4:2 as
// promoctl's `mixed`, at the original's target of 1,000 req/s, p95 < 200 ms.
// Point earns go as the admin: see point.js about the rate limit.
//   k6 run perf/k6/full.js              (RATE, DURATION, WARMUP, USERS, STOCK)
import {
  settings,
  options as open,
  arrival,
  sessions,
  createPolicy,
  createSale,
  issueCoupons,
  couponIssue,
  couponUse,
  point,
  order,
} from './lib.js';

const s = settings({ rate: 1000, duration: '60s', warmup: '5s', users: 100, stock: 100000 });
// Falling behind the rate shows as dropped_iterations, which has a threshold
// (k6's http_reqs rate divides by the whole test, setup included).
export const options = open(s);

export function setup() {
  const d = sessions(s);
  d.policy = createPolicy(s, d.admin);
  d.sale = createSale(s, d.admin);
  // One use in ten; beyond these, uses repeat coupons (ALREADY_USED refusals).
  d.coupons = issueCoupons(d.policy, d.users, Math.min(Math.floor(s.planned / 10) + 1, 5000));
  return d;
}

export default function (d) {
  const i = arrival(s);
  const k = i % 10;
  const cycle = Math.floor(i / 10);
  if (k <= 2) couponIssue(d, i);
  else if (k === 3) couponUse(d, cycle);
  else if (k <= 7) point(d, cycle * 4 + (k - 4));
  else order(d, i);
}
