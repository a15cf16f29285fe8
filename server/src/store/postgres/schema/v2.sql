-- Version 2: the statutory record kinds (issue 15). A safeguarding enquiry keeps an access list
-- in access_teams like a restricted document; an assessment's completion is kept in filed_ms
-- like a note's filing.
ALTER TABLE docs DROP CONSTRAINT docs_kind_check;
ALTER TABLE docs ADD CONSTRAINT docs_kind_check CHECK (kind IN (
    'case', 'note', 'plan', 'restricted', 'assessment', 'safeguarding', 'discharge', 'referral'
));
