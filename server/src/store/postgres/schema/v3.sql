-- Sealed sections and break-glass grants (issue 16): whether a restricted document is sealed
-- (staff on the case who are not on its access list see a stub) rather than hidden, and the
-- break-glass grants on it (JSON, a short list; NULL for none).
ALTER TABLE docs ADD COLUMN sealed boolean NOT NULL DEFAULT false;
ALTER TABLE docs ADD COLUMN grants text;
