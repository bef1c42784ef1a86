import { describe, expect, it } from 'vitest';
import { metricNamesIn } from '../support/promql.ts';

describe('metricNamesIn', () => {
  it('finds the metrics of an expression, not its functions, labels, keywords, numbers or durations', () => {
    expect(
      metricNamesIn(
        'histogram_quantile(0.95, sum by (le) (rate(user_sms_websms_request_duration_seconds_bucket{result=~"acc.*"}[$__rate_interval]))) > 5e0',
      ),
    ).toEqual(['user_sms_websms_request_duration_seconds_bucket']);
    expect(metricNamesIn('a > on (job, instance) group_left () b and ignoring(x) c offset 5m or vector(1) unless bool d')).toEqual(['a', 'b', 'c', 'd']);
    expect(metricNamesIn('sum(rate(x_total{outcome="failed or unknown"}[5m])) by (enterprise) / 1.5e3')).toEqual(['x_total']);
    expect(metricNamesIn('time() - user_sms_balance_watch_last_round_timestamp_seconds')).toEqual(['user_sms_balance_watch_last_round_timestamp_seconds']);
  });
});
