// perf:coupon: coupon issuance on one policy, open loop at 1,000/s.
//   k6 run perf/k6/coupon.js            (RATE, DURATION, WARMUP, USERS, STOCK)
import { settings, options as open, arrival, sessions, createPolicy, couponIssue } from './lib.js';

const s = settings({ rate: 1000, duration: '30s', warmup: '5s', users: 100 });
export const options = open(s);

export function setup() {
  const d = sessions(s);
  d.policy = createPolicy(s, d.admin);
  return d;
}

export default function (d) {
  couponIssue(d, arrival(s));
}
