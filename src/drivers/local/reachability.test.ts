/** Which `ip` changes take the kernel from one set of groups to the next (the e2e test runs them). */
import { describe, expect, it } from 'vitest';
import { peerChanges, peersOfGroups, tableFor, type PeerMap } from './reachability.js';

const map = (entries: Record<string, string[]>): PeerMap => new Map(Object.entries(entries).map(([ip, peers]) => [ip, new Set(peers)]));

describe('host reachability', () => {
  it('gives each member of a group every other member, and a group of one nothing', () => {
    expect(peersOfGroups([['10.1.0.2', '10.1.0.3', '10.1.0.4'], ['10.1.0.9']])).toEqual(
      map({ '10.1.0.2': ['10.1.0.3', '10.1.0.4'], '10.1.0.3': ['10.1.0.2', '10.1.0.4'], '10.1.0.4': ['10.1.0.2', '10.1.0.3'] }),
    );
  });

  it('numbers a host\'s table by its address', () => {
    expect(tableFor('10.237.0.2')).toBe(10 * 2 ** 24 + 237 * 2 ** 16 + 2);
  });

  it('adds routes before the rule that uses them when a pair forms', () => {
    expect(peerChanges('br0', new Map(), peersOfGroups([['10.1.0.2', '10.1.0.3']]))).toEqual([
      `route replace 10.1.0.3/32 dev br0 table ${tableFor('10.1.0.2')}`,
      `rule add iif br0 from 10.1.0.2 lookup ${tableFor('10.1.0.2')} pref 31000`,
      `route replace 10.1.0.2/32 dev br0 table ${tableFor('10.1.0.3')}`,
      `rule add iif br0 from 10.1.0.3 lookup ${tableFor('10.1.0.3')} pref 31000`,
    ]);
  });

  it('changes only what differs when a third host joins', () => {
    const before = peersOfGroups([['10.1.0.2', '10.1.0.3']]);
    const after = peersOfGroups([['10.1.0.2', '10.1.0.3', '10.1.0.4']]);
    expect(peerChanges('br0', before, after).sort()).toEqual([
      `route replace 10.1.0.2/32 dev br0 table ${tableFor('10.1.0.4')}`,
      `route replace 10.1.0.3/32 dev br0 table ${tableFor('10.1.0.4')}`,
      `route replace 10.1.0.4/32 dev br0 table ${tableFor('10.1.0.2')}`,
      `route replace 10.1.0.4/32 dev br0 table ${tableFor('10.1.0.3')}`,
      `rule add iif br0 from 10.1.0.4 lookup ${tableFor('10.1.0.4')} pref 31000`,
    ].sort());
  });

  it('removes the rule before its routes when a host is left alone', () => {
    expect(peerChanges('br0', peersOfGroups([['10.1.0.2', '10.1.0.3']]), new Map())).toEqual([
      `rule del iif br0 from 10.1.0.2 lookup ${tableFor('10.1.0.2')} pref 31000`,
      `route del 10.1.0.3/32 dev br0 table ${tableFor('10.1.0.2')}`,
      `rule del iif br0 from 10.1.0.3 lookup ${tableFor('10.1.0.3')} pref 31000`,
      `route del 10.1.0.2/32 dev br0 table ${tableFor('10.1.0.3')}`,
    ]);
  });

  it('changes nothing when nothing changed', () => {
    const groups = peersOfGroups([['10.1.0.2', '10.1.0.3']]);
    expect(peerChanges('br0', groups, peersOfGroups([['10.1.0.3', '10.1.0.2']]))).toEqual([]);
  });
});
