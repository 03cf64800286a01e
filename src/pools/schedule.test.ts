import { describe, expect, it } from 'vitest';
import { thrown as refusal } from '../../test/helpers/errors.js';
import { checkSchedule, readSchedule, scheduledSize } from './schedule.js';
import { parsePoolSpec } from './spec.js';

const workHours = { timezone: 'Europe/Berlin', rules: [{ cron: '* 8-18 * * 1-5', size: 10 }] };

describe('pool schedules', () => {
  it('gives the first rule that holds in the schedule\'s time zone, else the pool\'s own size', () => {
    // Monday 23 November 2026; Berlin is UTC+1 in winter.
    expect(scheduledSize(2, workHours, new Date('2026-11-23T07:00:00Z'))).toEqual({ size: 10, rule: 0 });
    expect(scheduledSize(2, workHours, new Date('2026-11-23T17:59:59Z'))).toEqual({ size: 10, rule: 0 });
    expect(scheduledSize(2, workHours, new Date('2026-11-23T18:00:00Z'))).toEqual({ size: 2, rule: null });
    expect(scheduledSize(2, workHours, new Date('2026-11-23T06:59:00Z'))).toEqual({ size: 2, rule: null });
    // Saturday.
    expect(scheduledSize(2, workHours, new Date('2026-11-28T10:00:00Z'))).toEqual({ size: 2, rule: null });
    // Summer: UTC+2.
    expect(scheduledSize(2, workHours, new Date('2026-07-06T06:30:00Z'))).toEqual({ size: 10, rule: 0 });
    expect(scheduledSize(2, null, new Date())).toEqual({ size: 2, rule: null });

    const layered = { timezone: 'UTC', rules: [{ cron: '* 12 * * *', size: 1 }, { cron: '* * * * *', size: 5 }] };
    expect(scheduledSize(0, layered, new Date('2026-11-23T12:30:00Z'))).toEqual({ size: 1, rule: 0 });
    expect(scheduledSize(0, layered, new Date('2026-11-23T13:30:00Z'))).toEqual({ size: 5, rule: 1 });
  });

  it('says when the size changes next, in whole local hours, across a weekend and a DST change', () => {
    const monday = readSchedule('t/a', 2, workHours, new Date('2026-11-23T09:12:34Z'));
    expect(monday).toEqual({ size: 10, rule: 0, next: { at: new Date('2026-11-23T18:00:00Z'), size: 2, rule: null } });
    const friday = readSchedule('t/b', 2, workHours, new Date('2026-11-27T20:00:00Z'));
    expect(friday.next).toEqual({ at: new Date('2026-11-30T07:00:00Z'), size: 10, rule: 0 });
    // Berlin moves to summer time on Sunday 29 March 2026: Monday 08:00 is 06:00 UTC.
    const spring = readSchedule('t/c', 2, workHours, new Date('2026-03-28T12:00:00Z'));
    expect(spring.next?.at).toEqual(new Date('2026-03-30T06:00:00Z'));
    // Kathmandu is UTC+5:45: its hours begin at a quarter past in UTC.
    const nepal = readSchedule('t/d', 0, { timezone: 'Asia/Kathmandu', rules: [{ cron: '* 9 * * *', size: 3 }] }, new Date('2026-11-23T00:00:00Z'));
    expect(nepal.next).toEqual({ at: new Date('2026-11-23T03:15:00Z'), size: 3, rule: 0 });
    // A rule that holds all week never changes within the look-ahead.
    expect(readSchedule('t/e', 0, { timezone: 'UTC', rules: [{ cron: '* * * * *', size: 1 }] }, new Date()).next).toBeNull();
  });

  it('keeps a reading only while it holds, and only for the spec it was read for', () => {
    const before = readSchedule('t/f', 2, workHours, new Date('2026-11-23T17:30:00Z'));
    expect(before.size).toBe(10);
    expect(readSchedule('t/f', 2, workHours, new Date('2026-11-23T18:00:00Z'))).toMatchObject({ size: 2, rule: null });
    expect(readSchedule('t/f', 3, workHours, new Date('2026-11-23T18:00:00Z'))).toMatchObject({ size: 3, rule: null });
    // An earlier moment than the one read is read again.
    expect(readSchedule('t/f', 3, workHours, new Date('2026-11-23T12:00:00Z'))).toMatchObject({ size: 10, rule: 0 });
  });

  it('refuses a time zone, an expression or a minute field that would not do what it says', () => {
    expect(refusal(() => checkSchedule('p', { timezone: 'Mars/Olympus', rules: [{ cron: '* 8 * * *', size: 1 }] })).message).toMatch(/not a time zone/);
    expect(refusal(() => checkSchedule('p', { timezone: 'UTC', rules: [{ cron: '* 8 * *', size: 1 }] })).message).toMatch(/has 4 fields, not 5/);
    const minute = refusal(() => checkSchedule('p', { timezone: 'UTC', rules: [{ cron: '* 8 * * *', size: 1 }, { cron: '0 8 * * *', size: 1 }] }));
    expect(minute.message).toMatch(/schedule\.rules\[1\]: the minute field of "0 8 \* \* \*" is not \*/);
    expect(minute.hint).toMatch(/one minute/);
    expect(refusal(() => checkSchedule('p', { timezone: 'UTC', rules: [{ cron: '* 25 * * *', size: 1 }] })).message).toMatch(/not a cron expression: .*hour/);
    expect(checkSchedule('p', { timezone: 'UTC', rules: [{ cron: '  *  8-18 * *   MON-FRI ', size: 1 }] }).rules[0]?.cron).toBe('* 8-18 * * MON-FRI');
  });

  it('checks each rule\'s size against the pool\'s maxSize and demand.max, and counts them in the default maxSize', () => {
    const spec = parsePoolSpec({ name: 'p', size: 1, maxLaunching: 2, schedule: { rules: [{ cron: '* 8-18 * * 1-5', size: 6 }] } });
    expect(spec.maxSize).toBe(8);
    expect(spec.schedule).toEqual({ timezone: 'UTC', rules: [{ cron: '* 8-18 * * 1-5', size: 6 }] });
    expect(refusal(() => parsePoolSpec({ name: 'p', size: 1, maxSize: 4, schedule: { rules: [{ cron: '* * * * *', size: 6 }] } })).message).toMatch(/rules\[0\] keeps 6 ready hosts, above maxSize 4/);
    expect(refusal(() => parsePoolSpec({ name: 'p', size: 1, demand: { max: 3 }, schedule: { rules: [{ cron: '* * * * *', size: 6 }] } })).message).toMatch(/above demand.max 3/);
    expect(refusal(() => parsePoolSpec({ name: 'p', size: 1, schedule: { rules: [] } })).message).toMatch(/schedule\.rules/);
  });
});
