import { describe, expect, it } from 'vitest';
import { getCountries, getCountryCallingCode, Metadata, type CountryCode } from 'libphonenumber-js/core';
import { parsePhoneNumberFromString as parseWithAllocationTables } from 'libphonenumber-js/max';
import maxMetadata from 'libphonenumber-js/metadata.max.json';
import minMetadata from 'libphonenumber-js/metadata.min.json';
import { normalisePhone } from '../../src/api/schemas.ts';

// The phone rule refuses only what cannot be a phone number; whether a range is assigned is WebSMS's
// call (its error 100), as it was in the old service.

// Belarusian mobile numbers the old service sent, in ranges libphonenumber's allocation tables do not list.
const UNLISTED_RANGES = ['+375290000100', '+375290000500', '+375290000504'];

describe('the phone rule accepts every possible number', () => {
  it.each(UNLISTED_RANGES)('accepts %s, in a range the allocation tables do not list', (phone) => {
    expect(normalisePhone(phone)).toBe(phone);
  });

  it('uses numbers that the allocation tables refuse, so the cases above test what they claim', () => {
    for (const phone of UNLISTED_RANGES) {
      const parsed = parseWithAllocationTables(phone);
      expect(parsed?.isValid(), `${phone} is now listed: pick an unlisted range`).toBe(false);
      expect(parsed?.isPossible(), phone).toBe(true);
    }
  });

  it.each([
    ['+375 (29) 000-01-00', '+375290000100'],
    ['+375.29.000.01.00', '+375290000100'],
    ['+375\u00A029\u00A0000\u00A00100', '+375290000100'],
    ['  +375 29 000 05 04  ', '+375290000504'],
    ['+375 29 625-40-70', '+375296254070'],
  ])('accepts the usual separators: %j is %s', (input, normalised) => {
    expect(normalisePhone(input)).toBe(normalised);
  });

  it.each([
    ['the shortest Belarusian number, 6 digits', '+375290000', '+375290000'],
    ['the longest Belarusian number, 11 digits', '+37529000010012', '+37529000010012'],
    ['Germany', '+49 1511 2345678', '+4915112345678'],
    ['Russia', '+7 495 123-45-67', '+74951234567'],
    ['the United Kingdom', '+44 20 7946 0000', '+442079460000'],
    ['the United States', '+1 (202) 555-0100', '+12025550100'],
  ])('accepts a number of possible length for its country: %s', (_case, input, normalised) => {
    expect(normalisePhone(input)).toBe(normalised);
  });
});

describe('the phone rule refuses what cannot be a phone number', () => {
  it.each(['+999123456789', '+99912345678', '+999999999999', '+2800000000', '+0123456789', '+0375290000100', '+0'])(
    'refuses %s: unknown country code',
    (phone) => {
      expect(normalisePhone(phone)).toBeNull();
    },
  );

  it.each([
    ['too short for Belarus (5 digits)', '+37529000'],
    ['too short for Belarus (4 digits)', '+3752900'],
    ['a country code alone', '+375'],
    ['a country code alone', '+1'],
    ['too long for Belarus (12 digits)', '+375290000100123'],
    ['too long for Belarus (13 digits)', '+3752900001001234'],
    ['too long for any country', '+3752962540701234567'],
    ['too short for the United States', '+1 202 555 01'],
    ['too long for Germany', '+49 1511 2345 6789 0123'],
  ])('refuses a length impossible for the country: %s, %s', (_case, phone) => {
    expect(normalisePhone(phone)).toBeNull();
  });

  it.each(['+375 29 OOO 01 00', '+375290000100abc', '+375-abc-def', 'phone', 'tel:+375290000100', '+375290000100 ext. 12', '+375290000100; DROP TABLE user_sms_send'])(
    'refuses letters: %j',
    (phone) => {
      expect(normalisePhone(phone)).toBeNull();
    },
  );

  it.each(['375290000100', '00375290000100', '8 029 000 01 00', '(29) 000-01-00'])('refuses a number without the leading +: %j', (phone) => {
    expect(normalisePhone(phone)).toBeNull();
  });

  it.each(['++375290000100', '+375290000100+', '+375/29/0000100', '+375_290000100', '+375,290000100', '+375290000100#12', '+375290000100\u0000', '', ' ', '+'])(
    'refuses other characters and empty input: %j',
    (phone) => {
      expect(normalisePhone(phone)).toBeNull();
    },
  );
});

describe('the metadata bundle', () => {
  // The rule uses 'min', the smallest bundle; that is only right while its possible lengths are 'max''s.
  const possibleLengths = (metadata: Metadata, country: CountryCode) => {
    metadata.selectNumberingPlan(country);
    return metadata.numberingPlan?.possibleLengths();
  };

  it("'min' knows the same countries, calling codes and possible lengths as 'max'", () => {
    const min = new Metadata(minMetadata);
    const max = new Metadata(maxMetadata);
    const countries = getCountries(maxMetadata);
    expect(getCountries(minMetadata)).toEqual(countries);
    for (const country of countries) {
      expect(getCountryCallingCode(country, minMetadata), country).toBe(getCountryCallingCode(country, maxMetadata));
      expect(possibleLengths(min, country), country).toEqual(possibleLengths(max, country));
    }
  });
});
