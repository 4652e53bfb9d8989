CREATE TABLE greetings (id INT PRIMARY KEY, text VARCHAR(64));
INSERT INTO greetings VALUES (1, 'hello'), (2, 'bonjour');
