"""The Streamlit dashboard (a later issue): explore schedules and compare predicted with measured traces."""
