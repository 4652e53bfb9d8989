-- The polyglot example's data source, loaded by the mariadb plugin's install-data-source into
-- database `polyglot`. The greeter of both app tiers reads `greetings`.
CREATE TABLE greetings (
    id INT PRIMARY KEY,
    message VARCHAR(100) NOT NULL
);

INSERT INTO greetings (id, message) VALUES
    (1, 'Greetings from MariaDB'),
    (2, 'Rendered by Python and JavaScript alike');
