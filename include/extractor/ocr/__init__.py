"""OCR layout and parsing: boxes -> lines (de-skewed) -> receipt fields.

``engine`` wraps RapidOCR, ``layout`` rebuilds lines, ``parser`` reads fields, and
``picker`` is the small learned model (numpy only at inference) that chooses which
lines are the store name and address and which date/amount is the receipt's.
"""

# The version of the parser, corrections and shipped picker weights, stamped on every
# row as the spec's ``prompt_version``. Bump it whenever the output for the same OCR can
# change (v2: bracket spacing, legal-suffix misreads, glued-word splitting, new weights;
# v3: contact lines (MOBILE / WHATSAPP / HOTLINE) end an address, new weights;
# v4: garbled dates as candidates, date and total features, line items, new weights;
# v5: the second opinion (doubtful store names and addresses re-read), totals with a
# misread point or a minus as candidates, new weights; v6: a field's confidence is the
# probability of its value, summed over every candidate that gives it, so the second opinion
# re-reads fewer store names and addresses; same weights; v7: an amount tendered -- on a cash /
# tender line or just above CHANGE, and less a non-zero change another amount of the page --
# is not offered as the total ("Accepted total 10.00 / Change 5.00"); features unchanged,
# weights refitted on the rebuilt OCR cache; v8: Malay and Indonesian month names (MAC, OGOS,
# DIS ...) and words for "date" (TARIKH, TRKH, TANGGAL, TGL) in the existing date features;
# same features, same weights; v9: an address span that holds a contact or tax detail (TEL,
# MOBILE / WHATSAPP, E-MAIL, GST ...) is not offered, its span cut before the detail is; the
# picker still trains on it; same features, same weights; v10: a store-name span cut inside the
# name (a joining "&" / "AND" / "(" at its edge, a bracket closed on the next line) or holding what
# no name holds (a notice, a contact, a postcode, an amount, a date, a street, only a place) is not
# offered, and where none is left the receipt has no store name; an address holds no registration,
# notice or owner / licensee either; same features, same weights; v11: a store-name span that starts
# on a legal form (SDN BHD, ENTERPRISE, CO.: the name began on the line before) is not offered, and a
# short number a line starts its name with ("99 SPEED MART") is not trimmed as noise, nor is a number's
# label, a registration or a span trimmed inside its bracket a name; the change given back (paid less it
# is another amount of the page) is not offered as the total; same features,
# weights refitted on the 2026-12-07 OCR cache: store names on the new candidates, date and total
# identical, address within 0.06 of a weight).
PARSER_VERSION = "parser-v11"
