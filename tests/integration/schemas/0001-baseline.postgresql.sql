-- The schema pacsnode's create_all made up to commit 4e59c5d, before migrations:
-- what the first migration (0001) must upgrade in place. Do not edit.

CREATE TABLE audit_log (
	id SERIAL NOT NULL, 
	time TIMESTAMP WITH TIME ZONE NOT NULL, 
	event VARCHAR(32) NOT NULL, 
	outcome VARCHAR(32) NOT NULL, 
	actor VARCHAR(255) NOT NULL, 
	sop_instance_uid VARCHAR(64), 
	study_instance_uid VARCHAR(64), 
	job_id INTEGER, 
	reason TEXT, 
	details JSON, 
	PRIMARY KEY (id)
);

CREATE INDEX ix_audit_log_time ON audit_log (time);

CREATE INDEX ix_audit_log_event ON audit_log (event);

CREATE INDEX ix_audit_log_job_id ON audit_log (job_id);

CREATE INDEX ix_audit_log_sop_instance_uid ON audit_log (sop_instance_uid);

CREATE INDEX ix_audit_log_study_instance_uid ON audit_log (study_instance_uid);

CREATE OR REPLACE FUNCTION audit_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING
        MESSAGE = 'audit_log is append-only: ' || TG_OP || ' refused',
        ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change();

CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change();

CREATE TABLE jobs (
	id SERIAL NOT NULL, 
	sop_instance_uid VARCHAR(64) NOT NULL, 
	study_instance_uid VARCHAR(64) NOT NULL, 
	series_instance_uid VARCHAR(64) NOT NULL, 
	sop_class_uid VARCHAR(64) NOT NULL, 
	calling_ae VARCHAR(16) NOT NULL, 
	spool_path VARCHAR(4096) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	max_attempts INTEGER NOT NULL, 
	not_before TIMESTAMP WITH TIME ZONE NOT NULL, 
	lease_owner VARCHAR(255), 
	lease_expires TIMESTAMP WITH TIME ZONE, 
	last_error TEXT, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT ck_jobs_attempts CHECK (attempts >= 0), 
	CONSTRAINT ck_jobs_max_attempts CHECK (max_attempts >= 1), 
	UNIQUE (sop_instance_uid), 
	CONSTRAINT jobstatus_value CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled', 'ignored'))
);

CREATE INDEX ix_jobs_status_not_before ON jobs (status, not_before);

CREATE INDEX ix_jobs_study_instance_uid ON jobs (study_instance_uid);

CREATE TABLE deliveries (
	id SERIAL NOT NULL, 
	job_id INTEGER NOT NULL, 
	destination VARCHAR(64) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	sop_instance_uid VARCHAR(64) NOT NULL, 
	path VARCHAR(4096) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	max_attempts INTEGER NOT NULL, 
	not_before TIMESTAMP WITH TIME ZONE NOT NULL, 
	lease_owner VARCHAR(255), 
	lease_expires TIMESTAMP WITH TIME ZONE, 
	last_error TEXT, 
	created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_deliveries_object UNIQUE (destination, sop_instance_uid), 
	CONSTRAINT ck_deliveries_attempts CHECK (attempts >= 0), 
	CONSTRAINT ck_deliveries_max_attempts CHECK (max_attempts >= 1), 
	FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE, 
	CONSTRAINT deliverystatus_value CHECK (status IN ('pending', 'sent', 'failed', 'dead'))
);

CREATE INDEX ix_deliveries_job_id ON deliveries (job_id);

CREATE INDEX ix_deliveries_status_not_before ON deliveries (status, not_before);
