-- The three-tier example's data source: loaded by the mariadb plugin's install-data-source
-- into the deployment's database (`data-source = { image = "datasource.sql", database = "shop" }`),
-- so it names no database itself.
CREATE TABLE greetings (
    id INT PRIMARY KEY,
    message VARCHAR(100) NOT NULL
);

INSERT INTO greetings (id, message) VALUES
    (1, 'Hello from the database tier'),
    (2, 'Bonjour de la base de donnees'),
    (3, 'Hallo aus der Datenbank');
