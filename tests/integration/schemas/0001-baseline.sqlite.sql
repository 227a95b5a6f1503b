-- The schema pacsnode's create_all made up to commit 4e59c5d, before migrations:
-- what the first migration (0001) must upgrade in place. Do not edit.

CREATE TABLE audit_log (
	id INTEGER NOT NULL, 
	time DATETIME NOT NULL, 
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

CREATE INDEX ix_audit_log_event ON audit_log (event);

CREATE INDEX ix_audit_log_time ON audit_log (time);

CREATE INDEX ix_audit_log_job_id ON audit_log (job_id);

CREATE INDEX ix_audit_log_sop_instance_uid ON audit_log (sop_instance_uid);

CREATE INDEX ix_audit_log_study_instance_uid ON audit_log (study_instance_uid);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;

CREATE TABLE jobs (
	id INTEGER NOT NULL, 
	sop_instance_uid VARCHAR(64) NOT NULL, 
	study_instance_uid VARCHAR(64) NOT NULL, 
	series_instance_uid VARCHAR(64) NOT NULL, 
	sop_class_uid VARCHAR(64) NOT NULL, 
	calling_ae VARCHAR(16) NOT NULL, 
	spool_path VARCHAR(4096) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	max_attempts INTEGER NOT NULL, 
	not_before DATETIME NOT NULL, 
	lease_owner VARCHAR(255), 
	lease_expires DATETIME, 
	last_error TEXT, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT ck_jobs_attempts CHECK (attempts >= 0), 
	CONSTRAINT ck_jobs_max_attempts CHECK (max_attempts >= 1), 
	UNIQUE (sop_instance_uid), 
	CONSTRAINT jobstatus_value CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled', 'ignored'))
);

CREATE INDEX ix_jobs_status_not_before ON jobs (status, not_before);

CREATE INDEX ix_jobs_study_instance_uid ON jobs (study_instance_uid);

CREATE TABLE deliveries (
	id INTEGER NOT NULL, 
	job_id INTEGER NOT NULL, 
	destination VARCHAR(64) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	sop_instance_uid VARCHAR(64) NOT NULL, 
	path VARCHAR(4096) NOT NULL, 
	status VARCHAR(16) NOT NULL, 
	attempts INTEGER NOT NULL, 
	max_attempts INTEGER NOT NULL, 
	not_before DATETIME NOT NULL, 
	lease_owner VARCHAR(255), 
	lease_expires DATETIME, 
	last_error TEXT, 
	created_at DATETIME NOT NULL, 
	updated_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	CONSTRAINT uq_deliveries_object UNIQUE (destination, sop_instance_uid), 
	CONSTRAINT ck_deliveries_attempts CHECK (attempts >= 0), 
	CONSTRAINT ck_deliveries_max_attempts CHECK (max_attempts >= 1), 
	FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE, 
	CONSTRAINT deliverystatus_value CHECK (status IN ('pending', 'sent', 'failed', 'dead'))
);

CREATE INDEX ix_deliveries_job_id ON deliveries (job_id);

CREATE INDEX ix_deliveries_status_not_before ON deliveries (status, not_before);
